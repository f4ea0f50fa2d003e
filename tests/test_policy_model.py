"""Policy model battery + trajectory-mask rasterisation (Tra-MoE paper Sec. 3.2, Tab. 3)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from trajmoe.policy.conditioning import drawn_mask_values, query_grid, rasterize_tracks
from trajmoe.policy.config import CONDITIONINGS, PolicyConfig
from trajmoe.policy.model import TrajectoryPolicy, block_causal_mask
from trajmoe.track import TrackConfig, TrackModel

IMG = 64


@pytest.fixture(scope="module")
def track_model():
    torch.manual_seed(0)
    # zero_init_head=False: a fresh zero-headed model predicts no motion, and these tests need tracks that move
    return TrackModel(TrackConfig.preset("tiny-dense").replace(depth=1, dim=32, heads=2, zero_init_head=False))


def make_policy(mode: str, track_model, **kw) -> TrajectoryPolicy:
    torch.manual_seed(0)
    cfg = dataclasses.replace(PolicyConfig.preset("tiny"), conditioning=mode, img_size=IMG, **kw)
    return TrajectoryPolicy(cfg, track_model if cfg.uses_track_model else None)


def make_batch(cfg: PolicyConfig, B: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    F, V = cfg.frame_stack, len(cfg.views)
    extra = {}
    if cfg.conditioning == "oracle":  # exact tracks come with the batch (from the episode files)
        extra["tracks"] = torch.rand(B, F, V, cfg.track_len, cfg.num_points, 2, generator=g)
    return {
        **extra,
        "rgb": torch.randint(0, 256, (B, F, V, 3, IMG, IMG), generator=g, dtype=torch.uint8),
        "proprio": torch.randn(B, F, cfg.proprio_dim, generator=g),
        "task_emb": torch.randn(B, cfg.lang_dim, generator=g),
        "actions": torch.rand(B, F, cfg.action_dim, generator=g) * 2 - 1,
        "valid": torch.tensor([[True] * F, [False] + [True] * (F - 1)]),
    }


# ---------------------------------------------------------------------------------------------
# Model battery: every conditioning mode


@pytest.mark.parametrize("mode", ["atm", "adaptive_mask"])
def test_cached_tracks_equal_predicted_tracks(mode, track_model):
    pol = make_policy(mode, track_model).eval()
    batch = make_batch(pol.cfg)
    B, F, V = batch["rgb"].shape[:3]
    img = batch["rgb"].float().flatten(0, 2) / 255
    emb = batch["task_emb"][:, None, None].expand(B, F, V, -1).flatten(0, 2)
    tracks = pol.predict_tracks(img, emb).view(B, F, V, pol.cfg.track_len, pol.cfg.num_points, 2)
    with torch.no_grad():
        a = pol.predict_actions(batch)
        b = pol.predict_actions({**batch, "tracks": tracks})
    torch.testing.assert_close(a, b)


def test_mode_changes_input_channels_and_head(track_model):
    n = {m: make_policy(m, track_model) for m in CONDITIONINGS}
    assert n["none"].img_encoders[0].stem[0].in_channels == 3
    assert n["atm"].img_encoders[0].stem[0].in_channels == 3
    assert n["drawn_mask"].img_encoders[0].stem[0].in_channels == 4
    assert n["adaptive_mask"].img_encoders[0].stem[0].in_channels == 4
    assert isinstance(n["adaptive_mask"].mask_delta, torch.nn.Parameter)
    assert not hasattr(n["drawn_mask"], "mask_delta")
    cfg = n["atm"].cfg
    late = len(cfg.views) * cfg.track_len * cfg.num_points * 2
    assert n["atm"].head.net[0].in_features == cfg.dim + late
    assert n["none"].head.net[0].in_features == cfg.dim


def test_block_causal_mask_and_causality(track_model):
    m = block_causal_mask(3, 2)
    assert m.tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0],
                          [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]
    pol = make_policy("atm", track_model).eval()
    batch = make_batch(pol.cfg)
    changed = {**batch, "rgb": batch["rgb"].clone(), "proprio": batch["proprio"].clone()}
    changed["rgb"][:, -1] = 255 - changed["rgb"][:, -1]
    changed["proprio"][:, -1] += 1.0
    with torch.no_grad():
        a, b = pol.predict_actions(batch), pol.predict_actions(changed)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])  # earlier frames cannot see the last one
    assert (a[:, -1] - b[:, -1]).abs().max() > 1e-6


@pytest.mark.parametrize("mode", ["none", "adaptive_mask"])
def test_select_action_matches_training_window(mode, track_model):
    """Queues padded by repeating the first frame == a training window clamped at the start."""
    pol = make_policy(mode, track_model).eval()
    cfg = pol.cfg
    rng = np.random.default_rng(0)
    emb = rng.standard_normal(cfg.lang_dim).astype(np.float32)
    obs = [{"rgb": {v: rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8) for v in cfg.views},
            "ee_pos": rng.standard_normal(3).astype(np.float32), "gripper": np.float32(rng.random())}
           for _ in range(2)]
    pol.reset(task_emb=emb)
    acts = [pol.select_action(o) for o in obs]
    assert acts[0].shape == (cfg.action_dim,) and np.all(np.abs(acts[1]) <= 1)
    assert len(pol._feat_q) == cfg.frame_stack
    idx = [0] * (cfg.frame_stack - 1) + [1]  # window ending at step 1, clamped at the start
    batch = {
        "rgb": torch.from_numpy(np.stack([np.stack([obs[i]["rgb"][v] for v in cfg.views]) for i in idx])).permute(0, 1, 4, 2, 3)[None],
        "proprio": torch.tensor(np.stack([np.r_[obs[i]["ee_pos"], obs[i]["gripper"]] for i in idx]))[None],
        "task_emb": torch.from_numpy(emb)[None],
        "actions": torch.zeros(1, cfg.frame_stack, cfg.action_dim),
    }
    with torch.no_grad():
        ref = pol.predict_actions(batch)[0, -1].clamp(-1, 1).numpy()
    np.testing.assert_allclose(acts[1], ref, atol=1e-5)
    if mode != "none":
        assert pol.last_tracks.shape == (len(cfg.views), cfg.track_len, cfg.num_points, 2)
    pol.reset()
    with pytest.raises(ValueError, match="task embedding"):
        pol.select_action(obs[0])
    with pytest.raises(ValueError, match="lacks view"):
        pol.select_action({**obs[0], "task_emb": emb, "rgb": {"nope": obs[0]["rgb"][cfg.views[0]]}})


def test_batch_dimension_mismatches_are_clear(track_model):
    pol = make_policy("atm", track_model)
    batch = make_batch(pol.cfg)
    with pytest.raises(ValueError, match="action_dim=4"):
        pol({**batch, "actions": torch.zeros(2, pol.cfg.frame_stack, 7)})
    with pytest.raises(ValueError, match="batch rgb must be"):
        pol({**batch, "rgb": batch["rgb"][:, :, :1]})
    with pytest.raises(ValueError, match="track_len"):
        TrajectoryPolicy(dataclasses.replace(pol.cfg, track_len=8), track_model)


def test_config_validation_quotes_bad_values():
    with pytest.raises(ValueError, match="conditioning.*'mask'"):
        PolicyConfig(conditioning="mask")
    with pytest.raises(ValueError, match="img_size"):
        PolicyConfig(img_size=100)
    with pytest.raises(ValueError, match="unknown policy preset 'huge'"):
        PolicyConfig.preset("huge")
    assert PolicyConfig(views=["a", "b"]).views == ("a", "b")


# ---------------------------------------------------------------------------------------------
# Rasterisation


def single_point_track(T: int, t: int, x: float, y: float) -> torch.Tensor:
    tr = torch.full((1, T, 1, 2), -5.0)  # every other timestep outside the image
    tr[0, t, 0] = torch.tensor([x, y])
    return tr


@pytest.mark.parametrize("t,col,row", [(0, 0, 0), (5, 17, 9), (15, 31, 23)])
def test_point_sets_exactly_its_pixel_and_grad_reaches_only_its_timestep(t, col, row):
    H, W, T = 24, 32, 16
    values = torch.nn.Parameter(torch.arange(1, T + 1, dtype=torch.float32) / 10)
    mask = rasterize_tracks(single_point_track(T, t, (col + 0.5) / W, (row + 0.3) / H), values, H, W)
    assert mask.shape == (1, H, W)
    nz = torch.nonzero(mask[0])
    assert nz.tolist() == [[row, col]]
    assert mask[0, row, col].item() == pytest.approx(values[t].item())
    (mask * 3.0).sum().backward()
    expected = torch.zeros(T)
    expected[t] = 3.0
    torch.testing.assert_close(values.grad, expected)


def test_out_of_image_points_are_ignored():
    H = W = 16
    values = torch.nn.Parameter(torch.ones(4))
    pts = torch.tensor([[1.0, 0.5], [-0.01, 0.5], [0.5, 1.0], [0.5, -0.1]])  # floor(x W) in {16, -1}
    tr = pts[None, :, None, :]  # (1, T=4, N=1, 2)
    mask = rasterize_tracks(tr, values, H, W)
    assert mask.abs().sum() == 0
    mask.sum().backward()
    assert values.grad is None or values.grad.abs().sum() == 0
    tr_nan = torch.full((1, 4, 1, 2), float("nan"))
    assert rasterize_tracks(tr_nan, values, H, W).abs().sum() == 0
    # edge pixels just inside are kept
    tr_edge = torch.tensor([[15.9 / 16, 0.0], [0.0, 15.9 / 16], [0.5, 0.5], [0.5, 0.5]])[None, :, None]
    mask = rasterize_tracks(tr_edge, torch.tensor([1.0, 2.0, 3.0, 4.0]), H, W)
    assert mask[0, 0, 15] == 1.0 and mask[0, 15, 0] == 2.0 and mask[0, 8, 8] == 4.0
    assert (mask != 0).sum() == 3


def test_overlap_latest_timestep_wins_and_batches_are_independent():
    H = W = 8
    T = 16
    values = torch.nn.Parameter(torch.arange(T, dtype=torch.float32) + 1)
    tr = torch.full((2, T, 2, 2), -1.0)
    px = torch.tensor([2.5 / W, 5.5 / H])  # pixel (col 2, row 5)
    tr[0, 3, 0] = px  # track 0 passes it at t=3
    tr[0, 10, 1] = px + 0.04 / W  # track 1 passes the same pixel at t=10
    tr[0, 12, 0] = px  # ... and track 0 again at t=12 -> wins
    tr[1, 7, 0] = px  # another sample: its own mask
    mask = rasterize_tracks(tr, values, H, W)
    assert mask[0, 5, 2] == 13.0 and mask[1, 5, 2] == 8.0
    assert (mask != 0).sum() == 2
    mask.sum().backward()
    g = torch.zeros(T)
    g[12] = 1
    g[7] = 1
    torch.testing.assert_close(values.grad, g)


def test_interpolated_lines_take_the_segment_start_value():
    H = W = 16
    tr = torch.tensor([[0.5 / 16, 0.5 / 16], [8.5 / 16, 0.5 / 16]])[None, :, None]  # (1, T=2, 1, 2): a horizontal segment
    values = torch.tensor([1.0, 2.0])
    dots = rasterize_tracks(tr, values, H, W, interp=0)
    assert (dots != 0).sum() == 2
    line = rasterize_tracks(tr, values, H, W, interp=3)  # points at x = 0, 2, 4, 6, 8 pixels
    assert torch.nonzero(line[0, 0]).flatten().tolist() == [0, 2, 4, 6, 8]
    assert line[0, 0, [0, 2, 4, 6]].tolist() == [1.0] * 4 and line[0, 0, 8] == 2.0


def test_drawn_values_and_query_grid():
    v = drawn_mask_values(16)
    assert torch.allclose(v[:8], torch.full((8,), 128 / 255)) and torch.all(v[8:] == 1.0)
    g = query_grid(32)
    assert g.shape == (32, 2) and len(torch.unique(g[:, 0])) == 8 and len(torch.unique(g[:, 1])) == 4
    assert g.min() > 0 and g.max() < 1


def test_mask_reaches_the_image_encoder(track_model):
    """The 4th channel holds the rasterised tracks of the frame (drawn_mask: 128/255 and 1)."""
    pol = make_policy("drawn_mask", track_model).eval()
    seen = {}
    hook = pol.img_encoders[0].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].clone()))
    batch = make_batch(pol.cfg, B=1)
    with torch.no_grad():
        pol.predict_actions(batch)
    hook.remove()
    ch4 = seen["x"][:, 3]  # (F, H, W) of view 0
    img = batch["rgb"][0, :, 0].float() / 255  # (F, 3, H, W)
    tracks = pol.predict_tracks(img, batch["task_emb"].expand(img.shape[0], -1))
    expected = rasterize_tracks(tracks, drawn_mask_values(pol.cfg.track_len), IMG, IMG, pol.cfg.mask_interp)
    torch.testing.assert_close(ch4, expected)
    vals = torch.unique(ch4)
    assert len(vals) == 3 and vals[0] == 0 and vals[-1] == 1.0  # background, 128/255, 255/255


def test_downsample_pools_frames_and_mask(track_model):
    pol = make_policy("adaptive_mask", track_model, downsample=2).train()
    seen = {}
    hook = pol.img_encoders[0].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].detach().clone()))
    loss, _ = pol(make_batch(pol.cfg))
    hook.remove()
    assert seen["x"].shape[-2:] == (IMG // 2, IMG // 2) and seen["x"].shape[1] == 4
    loss.backward()
    assert pol.mask_delta.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="divisible by 2 \\* patch \\* downsample"):
        PolicyConfig(img_size=128, patch=16, downsample=8)


def test_oracle_policy_needs_exact_tracks_not_a_track_model():
    pol = make_policy("oracle", None).eval()
    assert pol.track_model is None and pol.cfg.uses_tracks and not pol.cfg.uses_track_model
    batch = make_batch(pol.cfg)
    with torch.no_grad():
        a = pol.predict_actions(batch)
        b = pol.predict_actions({**batch, "tracks": batch["tracks"].flip(-2)})
    assert not torch.allclose(a, b)  # the actions depend on the given tracks
    with pytest.raises(ValueError, match="takes the exact grid tracks from the batch"):
        pol.predict_actions({k: v for k, v in batch.items() if k != "tracks"})
    cfg = pol.cfg
    obs = {"rgb": {v: np.zeros((IMG, IMG, 3), np.uint8) for v in cfg.views}, "ee_pos": np.zeros(3, np.float32),
           "gripper": np.zeros(1, np.float32), "task_emb": np.zeros(cfg.lang_dim, np.float32)}
    pol.reset()
    with pytest.raises(ValueError, match=r"needs obs\['oracle_tracks'\]"):
        pol.select_action(obs)
    obs["oracle_tracks"] = np.full((len(cfg.views), cfg.track_len, cfg.num_points, 2), 0.5, np.float32)
    assert pol.select_action(obs).shape == (cfg.action_dim,)
    obs["oracle_tracks"] = obs["oracle_tracks"][:, :3]
    with pytest.raises(ValueError, match="must be"):
        pol.select_action(obs)


def test_adaptive_values_get_gradients_of_the_expected_sign(track_model):
    """Hand-built case through the policy's own mask path: timestep 2 owns pixel A, timestep 5 owns
    pixel B, no other point is inside the image. A readout that rewards brightness at A and penalises
    it at B must push value 2 up and value 5 down (negative / positive gradient), and leave the others."""
    pol = make_policy("adaptive_mask", track_model, mask_interp=0).train()
    cfg, T, N, V = pol.cfg, pol.cfg.track_len, pol.cfg.num_points, len(pol.cfg.views)
    tracks = torch.full((1, 1, V, T, N, 2), -1.0)  # outside the image: ignored
    a, b = (3.5 / IMG, 4.5 / IMG), (20.5 / IMG, 9.5 / IMG)
    tracks[..., 2, 0, :] = torch.tensor(a)
    tracks[..., 5, 1, :] = torch.tensor(b)
    seen = {}
    hook = pol.img_encoders[0].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    batch = {**make_batch(cfg, B=1), "tracks": tracks.expand(1, cfg.frame_stack, -1, -1, -1, -1)}
    batch["rgb"] = batch["rgb"][:1, -1:]
    batch = {k: (v[:1, -1:] if k in ("proprio", "actions", "valid") else v) for k, v in batch.items()}
    batch["tracks"] = tracks
    pol.predict_actions(batch)
    hook.remove()
    mask = seen["x"][0, 3]  # (H, W) of view 0
    assert mask[4, 3] == pol.mask_values[2] and mask[9, 20] == pol.mask_values[5] and (mask != 0).sum() == 2
    (mask[9, 20] - mask[4, 3]).backward()
    g = pol.mask_delta.grad
    assert g[2] < 0 and g[5] > 0
    assert torch.all(g[[t for t in range(T) if t not in (2, 5)]] == 0)
    assert g[5] == pytest.approx(cfg.mask_value_scale) and g[2] == pytest.approx(-cfg.mask_value_scale)


def test_adaptive_values_move_as_fast_as_their_scale_says(track_model):
    """One AdamW step at the policy lr (5e-4) moves each value by ~mask_value_scale * lr (Adam's first
    step is lr * sign(grad)), not by lr: the fix for values that barely moved in training."""
    from trajmoe.train.trainer import param_groups

    pol = make_policy("adaptive_mask", track_model).train()
    opt = torch.optim.AdamW(param_groups(pol, 1e-4), lr=5e-4)
    before = pol.mask_values.detach().clone()
    loss, _ = pol(make_batch(pol.cfg))
    loss.backward()
    opt.step()
    moved = (pol.mask_values.detach() - before).abs()
    has_grad = pol.mask_delta.grad != 0
    assert has_grad.any()
    torch.testing.assert_close(moved[has_grad], torch.full_like(moved[has_grad], pol.cfg.mask_value_scale * 5e-4), rtol=0.02, atol=0)  # eps


def test_late_fusion_variants_static_tracks_add_nothing_in_motion_mode():
    """`late_fusion`: "raw" (ATM) feeds the absolute tracks to the head, "motion" their displacement from the
    query point (a static track adds exactly 0: its head input equals the "none" part), "none" nothing."""
    pols = {m: make_policy("oracle", None, late_fusion=m).eval() for m in ("raw", "motion", "none")}
    cfg = pols["raw"].cfg
    late = len(cfg.views) * cfg.track_len * cfg.num_points * 2
    assert pols["raw"].head.net[0].in_features == pols["motion"].head.net[0].in_features == cfg.dim + late
    assert pols["none"].head.net[0].in_features == cfg.dim
    batch = make_batch(cfg)
    static = batch["tracks"][..., :1, :, :].expand_as(batch["tracks"]).clone()  # every point stays at its query
    feat = torch.randn(2, cfg.frame_stack, cfg.dim)
    prop = torch.zeros(2, cfg.frame_stack, cfg.proprio_dim)
    seen = {}
    def grab(m, inp, out):
        seen["x"] = inp[0]
    h = pols["motion"].head.register_forward_hook(grab)
    with torch.no_grad():
        pols["motion"].decode_actions(feat, prop, static)
    h.remove()
    assert torch.count_nonzero(seen["x"][..., cfg.dim:]) == 0
    with pytest.raises(ValueError, match="late_fusion"):
        dataclasses.replace(cfg, late_fusion="early")


def test_track_tokens_none_leaves_the_spatial_transformer_blind_to_the_tracks():
    """`track_tokens="none"`: no track encoder, and with late_fusion="none" the oracle policy's actions do not
    depend on the tracks at all (the token-free control of the track pathway's cost); a bad value is refused."""
    pol = make_policy("oracle", None, track_tokens="none", late_fusion="none").eval()
    assert not hasattr(pol, "track_encoder")
    batch = make_batch(pol.cfg)
    with torch.no_grad():
        a = pol.predict_actions(batch)
        batch["tracks"] = torch.rand_like(batch["tracks"])
        b = pol.predict_actions(batch)
    torch.testing.assert_close(a, b)
    with_tokens = make_policy("oracle", None, late_fusion="none").eval()
    with torch.no_grad():
        c = with_tokens.predict_actions(batch)
        batch["tracks"] = torch.rand_like(batch["tracks"])
        assert not torch.allclose(c, with_tokens.predict_actions(batch))
    with pytest.raises(ValueError, match="track_tokens"):
        dataclasses.replace(pol.cfg, track_tokens="pooled")


def test_late_fusion_split_init_starts_the_head_as_plain_bc():
    """`late_fusion_init="split"`: the head's track columns start at zero (tracks add nothing at step 0, whatever
    they are) and its action columns at a D-input layer's scale; "concat" (ATM) mixes the tracks in from the start."""
    split = make_policy("oracle", None, late_fusion="raw", late_fusion_init="split").eval()
    D = split.cfg.dim
    w = split.head.net[0].weight
    assert torch.count_nonzero(w[:, D:]) == 0
    assert w[:, :D].abs().max() <= 1.0 / D ** 0.5 and w[:, :D].abs().max() > 0.5 / D ** 0.5
    feat = torch.randn(2, split.cfg.frame_stack, D)
    prop = torch.zeros(2, split.cfg.frame_stack, split.cfg.proprio_dim)
    tr = make_batch(split.cfg)["tracks"]
    with torch.no_grad():
        torch.testing.assert_close(split.decode_actions(feat, prop, tr), split.decode_actions(feat, prop, torch.rand_like(tr)))
        concat = make_policy("oracle", None, late_fusion="raw").eval()
        assert not torch.allclose(concat.decode_actions(feat, prop, tr), concat.decode_actions(feat, prop, torch.rand_like(tr)))
    with pytest.raises(ValueError, match="late_fusion_init"):
        dataclasses.replace(split.cfg, late_fusion_init="zero")
