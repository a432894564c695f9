"""The demo models' absolute position signal: normalised coordinates from RoPE ids."""
import torch

from demo import position


def _ids(rows, cols, index=0, scale=1.0, offset=0.0):
    r, c = torch.meshgrid(torch.arange(rows) * scale + offset, torch.arange(cols) * scale + offset, indexing="ij")
    return torch.stack([torch.full((rows * cols,), float(index)), r.flatten(), c.flatten()], -1)


def test_integer_grids_map_to_cell_centres():
    uv = position.normalised_coordinates(_ids(4, 8))
    assert torch.allclose(uv[0], torch.tensor([0.125, 1 / 16])) and torch.allclose(uv[-1], torch.tensor([0.875, 15 / 16]))


def test_the_same_place_at_every_resolution():
    low = position.normalised_coordinates(_ids(4, 4))
    # a 2x coarser grid placed at its cells' centres in full-grid (8x8) coordinates
    coarse_in_full = position.normalised_coordinates(_ids(4, 4, scale=2.0, offset=0.5))
    assert torch.allclose(low, coarse_in_full)
    fine = position.normalised_coordinates(_ids(8, 8)).reshape(8, 8, 2)
    pooled = fine.reshape(4, 2, 4, 2, 2).mean((1, 3)).reshape(16, 2)  # centres of 2x2 cells
    assert torch.allclose(low, pooled)


def test_each_reference_frame_is_normalised_on_its_own():
    ids = torch.cat([_ids(8, 8), _ids(4, 4, index=1)])
    uv = position.normalised_coordinates(ids)
    assert torch.allclose(uv[64:], position.normalised_coordinates(_ids(4, 4)))


def test_patch_adds_the_embedding_out_of_place():
    emb = position.PositionEmbedding(16)
    patch = position.post_input_patch(emb)
    img = torch.randn(2, 64, 16)
    args = {"img": img, "txt": torch.randn(2, 4, 16), "img_ids": _ids(8, 8)[None].expand(2, -1, -1), "txt_ids": None}
    assert torch.equal(patch(args)["img"], img)  # zero-initialised: plain FLUX
    torch.nn.init.normal_(emb.proj.weight)
    out = patch(args)["img"]
    assert out.shape == img.shape and not torch.equal(out, img) and torch.equal(args["img"], img)
    assert torch.allclose(out[0] - img[0], out[1] - img[1], atol=1e-5)  # one embedding for the batch


def test_samples_with_their_own_layouts_get_their_own_embeddings():
    emb = position.PositionEmbedding(16, init_std=1.0)
    # same token count, tokens at other places (Fresco: other cells upsampled in each sample)
    first, second = _ids(8, 8), _ids(8, 8).flip(0)
    per_sample = emb(torch.stack([first, second]))
    assert per_sample.shape == (2, 64, 16)
    assert torch.allclose(per_sample[0], emb(first[None])[0]) and torch.allclose(per_sample[1], emb(second[None])[0])
    assert not torch.allclose(per_sample[0], per_sample[1])
