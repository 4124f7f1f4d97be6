import torch

from fertool.train.augment import AugmentConfig, augment_batch


def _batch(n=6, size=32):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_same_generator_seed_same_output():
    x = _batch()
    a = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(7))
    b = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(7))
    c = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert a.shape == x.shape and torch.isfinite(a).all()


def test_disabled_is_identity():
    x = _batch()
    cfg = AugmentConfig.none()
    assert not cfg.enabled
    torch.testing.assert_close(augment_batch(x, cfg, torch.Generator()), x, rtol=0, atol=0)


def test_flip_only_flips():
    x = _batch(n=64)
    cfg = AugmentConfig(flip=0.5, rotate=0, scale=0, translate=0, brightness=0, contrast=0,
                        saturation=0, erase=0)
    y = augment_batch(x, cfg, torch.Generator().manual_seed(0))
    same = (y == x).flatten(1).all(1)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all()
    assert 10 < flipped.sum() < 54


def test_identity_affine_keeps_pixels():
    # A zero-strength geometric jitter must not blur the crop (align_corners convention).
    x = _batch()
    cfg = AugmentConfig(flip=0, rotate=1e-9, scale=0, translate=0, brightness=0, contrast=0,
                        saturation=0, erase=0)
    torch.testing.assert_close(augment_batch(x, cfg, torch.Generator()), x, atol=1e-5, rtol=0)


def test_config_round_trip():
    cfg = AugmentConfig(rotate=5)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
