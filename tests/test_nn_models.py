"""Backbones, heads and RegistrationNet: shapes for any size, identity at initialisation, world frames."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from torchalign.errors import InputError
from torchalign.functional.flow import integrate_velocity
from torchalign.grid import Grid
from torchalign.nn.config import ModelConfig
from torchalign.nn.heads import AffineHead, DenseHead, world_matrix, world_vectors
from torchalign.nn.models import RegistrationNet, build_model, warp
from torchalign.nn.unet import Encoder, UNet
from torchalign.transforms.dense import DenseDisplacement
from torchalign.transforms.linear import LinearTransform, MatrixTransform
from torchalign.transforms.velocity import StationaryVelocity


@pytest.mark.parametrize("shape", [(27, 29), (32, 32), (1, 7), (9, 11, 13), (5, 16, 3)])
def test_unet_any_size_crops_back(shape: tuple[int, ...]) -> None:
    net = UNet(len(shape), 2, [4, 6, 8, 8])
    out = net(torch.rand(2, 2, *shape))
    assert out.shape == (2, 4, *shape)


def test_encoder_levels_halve() -> None:
    enc = Encoder(3, 2, [4, 6, 8])
    maps = enc.levels(torch.rand(1, 2, 9, 16, 5))
    assert [tuple(m.shape[2:]) for m in maps] == [(9, 16, 5), (5, 8, 3), (3, 4, 2)]
    assert enc.out_channels == 8


def test_bad_input_names_the_expected_shape() -> None:
    net = UNet(2, 2, [4, 8])
    with pytest.raises(InputError, match=r"expects \(B, 2, \*S\) with 2 spatial axes, got \(1, 3, 8, 8\)"):
        net(torch.rand(1, 3, 8, 8))
    with pytest.raises(InputError, match="features"):
        UNet(2, 2, [])


@pytest.mark.parametrize("head,field", [("dense", "velocity"), ("dense", "displacement"), ("affine", "velocity")])
def test_untrained_model_is_close_to_identity(head: str, field: str) -> None:
    grid = Grid.from_geometry((19, 22), spacing=(1.2, 0.8), origin=(-5, 3))
    model = build_model(ModelConfig(ndim=2, head=head, field=field, features=[4, 8, 8]))
    t = model(torch.rand(3, 1, *grid.shape), torch.rand(3, 1, *grid.shape), grid)
    expected = {"velocity": StationaryVelocity, "displacement": DenseDisplacement}[field] if head == "dense" \
        else MatrixTransform
    assert isinstance(t, expected) and t.batch == 3
    assert t.displacement(grid).abs().max() < (1e-3 if head == "dense" else 1e-9)


def test_gradients_reach_the_backbone_through_the_transform() -> None:
    grid = Grid((12, 14))
    for head in ("dense", "affine"):
        model = build_model(ModelConfig(ndim=2, head=head, features=[4, 8]))
        fixed, moving = torch.rand(2, 1, 12, 14), torch.rand(2, 1, 12, 14)
        t = model(fixed, moving, grid)
        ((warp(moving, grid, t) - fixed) ** 2).mean().backward()
        # The affine head's last layer starts at zero, so only it gets a gradient at first.
        first = model.backbone.encoder.blocks[0][0] if head == "dense" else model.head.mlp[-1]
        assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_velocity_head_integrates_like_the_classical_svf() -> None:
    grid = Grid.from_geometry((10, 12), spacing=(2.0, 1.0))
    head = DenseHead(2, 3, "velocity", steps=5)
    nn.init.normal_(head.conv.weight, std=0.3)
    t = head(torch.rand(1, 3, 10, 12), grid)
    v = t.velocity
    assert torch.allclose(t.displacement(grid), integrate_velocity(v, grid, 5))
    assert v.requires_grad and not v.is_leaf  # still attached to the head


def test_voxel_axis_outputs_are_rotated_to_world_axes() -> None:
    # Voxel axis 0 points along world -y and axis 1 along world +x (a 90 degree rotation).
    direction = np.array([[0.0, 1.0], [-1.0, 0.0]])
    grid = Grid.from_geometry((4, 5), direction=direction)
    field = torch.zeros(1, 2, 4, 5)
    field[:, 0] = 3.0  # 3 mm along voxel axis 0
    world = world_vectors(field, grid)
    assert torch.allclose(world[:, 0], torch.zeros(4, 5)) and torch.allclose(world[:, 1], torch.full((4, 5), -3.0))
    assert world_vectors(field, Grid((4, 5))) is field


def test_affine_parameters_give_the_linear_transform_matrix() -> None:
    grid = Grid.from_geometry((20, 30), spacing=(1.0, 2.0), origin=(4.0, -7.0))
    params = torch.tensor([[1.5, -2.0, 3.0, 0.5, -0.2, 0.7]], dtype=torch.float64)
    m = world_matrix(params, grid, "affine")
    center = grid.center()
    radius = float((np.asarray(grid.shape) * grid.spacing).mean() / 2)
    ref = LinearTransform(2, "affine", center=center, radius=radius)
    with torch.no_grad():
        ref.translation.copy_(params[:, :2])
        ref.rotation.copy_(params[:, 2:3])
        ref.scale.copy_(params[:, 3:5])
        ref.shear.copy_(params[:, 5:6])
    assert torch.allclose(m, ref.matrix(), atol=1e-12)


def test_affine_frame_follows_the_grid_direction() -> None:
    # A translation along voxel axis 0 moves along the world direction of that axis.
    a = math.radians(30)
    direction = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    grid = Grid.from_geometry((16, 16), direction=direction)
    m = world_matrix(torch.tensor([[2.0, 0, 0, 0, 0, 0]], dtype=torch.float64), grid, "affine")
    assert np.allclose(m[0, :2, 2].numpy(), 2.0 * direction[:, 0])
    assert np.allclose(m[0, :2, :2].numpy(), np.eye(2))


def test_backbone_shape_mismatch_states_both_shapes() -> None:
    class Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, ::2]

    model = RegistrationNet(Bad(), DenseHead(2, 2))
    with pytest.raises(InputError, match=r"backbone output \(1, 2, 4, 8\).*expected \(1, 2, 8, 8\)"):
        model(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), Grid((8, 8)))


def test_input_checks() -> None:
    model = build_model(ModelConfig(ndim=2, features=[4]))
    with pytest.raises(InputError, match=r"moving must be \(B, 1, 8, 8\)"):
        model(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9), Grid((8, 8)))
    with pytest.raises(InputError, match="registers 2-D images"):
        model(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8), Grid((8, 8, 8)))


def test_learnable_copies_start_at_the_prediction() -> None:
    grid = Grid((10, 12))
    for head in ("dense", "affine"):
        model = build_model(ModelConfig(ndim=2, head=head, features=[4, 8]))
        if head == "dense":
            nn.init.normal_(model.head.conv.weight, std=0.2)
        else:
            nn.init.normal_(model.head.mlp[-1].bias, std=0.5)
        t = model(torch.rand(1, 1, 10, 12), torch.rand(1, 1, 10, 12), grid)
        copy = t.learnable_copy(grid)
        params = list(copy.parameters())
        assert params and all(p.is_leaf and p.requires_grad for p in params)
        assert torch.allclose(copy.displacement(grid).double(), t.displacement(grid).detach().double(), atol=1e-5)
    assert isinstance(copy, LinearTransform)


def test_affine_head_rejects_unknown_model() -> None:
    with pytest.raises(ValueError, match="rigid, similarity or affine"):
        AffineHead(2, 4, "projective")


def test_correlation_backbone_finds_a_translation_before_any_training() -> None:
    """The untrained correlation network (MIND descriptors, soft argmax) recovers an integer shift of a
    textured image in the interior, in the transform's convention (fixed x -> moving x + d). Catches
    a cost volume indexed the wrong way round, offsets listed in another order than the windows, and
    a head that forgets the voxel size."""
    from torchalign.nn.correlation import shift_by

    rng = np.random.default_rng(0)
    texture = torch.from_numpy(gaussian_filter(rng.standard_normal((48, 40)), 1.5).astype(np.float32))[None, None]
    moving = torch.roll(texture, shifts=(2, -1), dims=(2, 3))  # moving(x + (2, -1)) = fixed(x)
    grid = Grid.from_geometry((48, 40), spacing=(1.5, 1.5))
    model = build_model(ModelConfig(ndim=2, backbone="correlation", features=[4], iterations=1, sigma=0.0))
    with torch.no_grad():
        disp = model(texture, moving, grid).displacement(grid)[0, :, 8:-8, 8:-8]
    # voxels x 1.5 mm; the soft argmax of an untrained, untuned temperature pulls some voxels towards 0
    assert torch.allclose(disp.flatten(1).median(1).values, torch.tensor([3.0, -1.5]), atol=0.4)
    shifted = shift_by(texture, torch.tensor([2.0, -1.0]).reshape(1, 2, 1, 1).expand(1, 2, 48, 40))
    assert torch.allclose(shifted[0, 0, :-2, 1:], texture[0, 0, 2:, :-1], atol=1e-5)
    with pytest.raises(ValueError, match="correlation backbone predicts a dense velocity"):
        ModelConfig(ndim=2, backbone="correlation", head="affine")
