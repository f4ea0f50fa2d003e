"""Experiment specs (grids of variants x seeds over `trajmoe` commands) and their reports."""
