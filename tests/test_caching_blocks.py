"""The module-granularity block math in the adapters equals the real ComfyUI block forwards.

The adapters re-express each block from its public submodules to expose the per-module outputs
(TaylorSeer's per-module slots). These tests pin that to the real `forward` on random inputs, exactly (fp32),
so a ComfyUI update that changes a block fails here instead of silently changing images. They
also check that a forecast fed with the true module outputs reproduces the block exactly.
"""
import pytest
import torch

from fastdit import adapters
from fastdit.testing import tiny_models as tm


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _pe(dm, n_tokens, batch=2):
    ids = torch.zeros(batch, n_tokens, 3)
    ids[..., 1] = torch.arange(n_tokens) // 4
    ids[..., 2] = torch.arange(n_tokens) % 4
    return dm.pe_embedder(ids)


def _check(slots, ref, args, real_out):
    """run_full == real block; run_forecast with the true module outputs == real block."""
    clone = lambda a: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in a.items()}  # noqa: E731
    out, feats = slots.run_full(ref, clone(args), {})
    assert set(feats) == set(slots.module_slots(ref))
    for k, v in real_out.items():
        assert torch.equal(out[k], v), f"{ref.patch_key} {k}: re-expressed block differs from the real forward"
    again = slots.run_forecast(ref, clone(args), {k: v.clone() for k, v in feats.items()}, {})
    for k, v in real_out.items():
        assert torch.allclose(again[k], v, atol=1e-6, rtol=1e-6), f"{ref.patch_key} {k}: forecast path"
    return feats


def _flux_like(family, mod_dims=False):
    model = tm.make_model(family)
    dm = model.model.diffusion_model
    ad = adapters.for_model(model)
    slots = ad.cache_slots(ad)
    n_img, n_txt, d = 12, 5, dm.hidden_size
    b = 1 if mod_dims else 2  # comfy's per-token apply_mod broadcasts [B, D] gates: batch 1 (as HunyuanVideo i2v runs)
    vec = _rand(b, 2, d, seed=1) if mod_dims else _rand(b, d, seed=1)
    img_dims = [(0, 4, 0), (4, None, 1)] if mod_dims else None
    txt_dims = [(0, None, 1)] if mod_dims else None
    pe = _pe(dm, n_img + n_txt, b)
    for ref in ad.blocks():
        if ref.kind == "double":
            img, txt = _rand(b, n_img, d, seed=2), _rand(b, n_txt, d, seed=3)
            args = {"img": img, "txt": txt, "vec": vec, "pe": pe, "attn_mask": None,
                    "modulation_dims_img": img_dims, "modulation_dims_txt": txt_dims, "transformer_options": {}}
            r_img, r_txt = ref.module(img=img.clone(), txt=txt.clone(), vec=vec, pe=pe, modulation_dims_img=img_dims,
                                      modulation_dims_txt=txt_dims, transformer_options={})
            feats = _check(slots, ref, args, {"img": r_img, "txt": r_txt})
            assert feats["img_attn"].shape == img.shape and feats["txt_mlp"].shape == txt.shape
        else:
            x = _rand(b, n_img + n_txt, d, seed=4)
            args = {"img": x, "vec": vec, "pe": pe, "attn_mask": None, "modulation_dims": img_dims,
                    "transformer_options": {}}
            real = ref.module(x.clone(), vec=vec, pe=pe, modulation_dims=img_dims, transformer_options={})
            _check(slots, ref, args, {"img": real})


def test_flux_blocks_match_real_forward():
    _flux_like("flux")


def test_flux_forecast_adds_the_gated_forecast_with_one_rounding():
    """On a forecast step a FLUX stream gets gate * forecast in one fused multiply-add: in bf16 that
    is the fp32 value rounded once (ComfyUI's own block rounds the product, then the sum)."""
    model = tm.make_model("flux", dtype=torch.bfloat16)
    ad = adapters.for_model(model)
    slots = ad.cache_slots(ad)
    d = model.model.diffusion_model.hidden_size
    vec = _rand(2, d, seed=1).bfloat16()
    for ref in ad.blocks():
        n_img = {"double": 12, "single": 17}[ref.kind]
        preds = {name: _rand(2, 5 if name.startswith("txt") else n_img, d, seed=i).bfloat16()
                 for i, name in enumerate(slots.module_slots(ref))}
        streams = {"img": _rand(2, n_img, d, seed=7).bfloat16(), "txt": _rand(2, 5, d, seed=8).bfloat16()}
        args = {"img": streams["img"].clone(), "txt": streams["txt"].clone(), "vec": vec}
        out = slots.run_forecast(ref, args, {k: v.clone() for k, v in preds.items()}, {})
        if ref.kind == "double":
            (m1, m2), (t1, t2) = ref.module.img_mod(vec), ref.module.txt_mod(vec)
            plan = {"img": [("img_attn", m1.gate), ("img_mlp", m2.gate)],
                    "txt": [("txt_attn", t1.gate), ("txt_mlp", t2.gate)]}
        else:
            plan = {"img": [("total", ref.module.modulation(vec)[0].gate)]}
        for stream, steps in plan.items():
            want = streams[stream]
            for name, gate in steps:
                want = (want.float() + preds[name].float() * gate.float()).bfloat16()
            assert torch.equal(out[stream], want), (ref.patch_key, stream)
            assert out[stream].data_ptr() == args[stream].data_ptr()  # in place, as the block itself


@pytest.mark.parametrize("mod_dims", [False, True], ids=["plain", "per_token_modulation"])
def test_hunyuan_blocks_match_real_forward(mod_dims):
    _flux_like("hunyuan_video", mod_dims)


def test_qwen_blocks_match_real_forward():
    model = tm.make_model("qwen_image")
    dm = model.model.diffusion_model
    ad = adapters.for_model(model)
    slots = ad.cache_slots(ad)
    d = dm.inner_dim
    img, txt, temb = _rand(2, 12, d, seed=2), _rand(2, 5, d, seed=3), _rand(2, d, seed=1)
    pe = _pe(dm, 17).to(img.dtype).contiguous()
    for ref in ad.blocks():
        r_txt, r_img = ref.module(hidden_states=img, encoder_hidden_states=txt, encoder_hidden_states_mask=None,
                                  temb=temb, image_rotary_emb=pe, transformer_options={})
        _check(slots, ref, {"img": img, "txt": txt, "vec": temb, "pe": pe, "transformer_options": {}},
               {"img": r_img, "txt": r_txt})


@pytest.mark.parametrize("per_token_e", [False, True])
def test_wan_blocks_match_real_forward(per_token_e):
    model = tm.make_model("wan")
    dm = model.model.diffusion_model
    ad = adapters.for_model(model)
    slots = ad.cache_slots(ad)
    n, d = 12, dm.dim
    x, ctx = _rand(2, n, d, seed=2), _rand(2, 7, d, seed=3)
    e = _rand(2, n, 6, d, seed=1) if per_token_e else _rand(2, 6, d, seed=1)
    freqs = dm.rope_embedder(ad.grid_positions((1, 3, 4))[None]).movedim(1, 2)
    for ref in ad.blocks():
        real = ref.module(x.clone(), e=e, freqs=freqs, context=ctx, context_img_len=None, transformer_options={})
        _check(slots, ref, {"img": x, "txt": ctx, "vec": e, "pe": freqs, "transformer_options": {}}, {"img": real})


def test_unknown_block_classes_have_no_module_slots():
    ad = adapters.for_model(tm.make_model("flux"))
    slots = ad.cache_slots(ad)
    fake = adapters.BlockRef("double", 0, torch.nn.Linear(2, 2))
    assert slots.module_slots(fake) is None
    assert slots.streams(fake) == ("img", "txt")


def test_a_changed_block_interface_gets_no_module_slots():
    from comfy.ldm.flux.layers import DoubleStreamBlock
    from fastdit.adapters.cache_slots import forward_params
    from fastdit.adapters.flux import FLUX_DOUBLE_FORWARD

    class NewerDoubleBlock(DoubleStreamBlock):  # as if a ComfyUI update added a forward argument
        def forward(self, img, txt, vec, pe, attn_mask=None, modulation_dims_img=None, modulation_dims_txt=None,
                    transformer_options={}, timestep_zero_index=None):
            return super().forward(img, txt, vec, pe, attn_mask, modulation_dims_img, modulation_dims_txt,
                                   transformer_options)

    ad = adapters.for_model(tm.make_model("flux"))
    real = ad.blocks()[0]
    slots = ad.cache_slots(ad)
    newer = NewerDoubleBlock.__new__(NewerDoubleBlock)
    newer.__dict__.update(real.module.__dict__)
    assert slots.module_slots(real) is not None and forward_params(real.module) == FLUX_DOUBLE_FORWARD
    assert forward_params(newer) != FLUX_DOUBLE_FORWARD
    assert slots.module_slots(adapters.BlockRef("double", 0, newer)) is None


# -- gate-only modulation on forecast steps -----------------------------------------------------

def _flops(fn, *args):
    """(result, matmul FLOPs) of fn(*args), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        out = fn(*args)
    return out, counter.get_total_flops()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_flux_forecast_gates_equal_the_modulation_chunks_without_running_it(dtype):
    from fastdit.adapters.flux import modulation_gates
    ad = adapters.for_model(tm.make_model("flux", dtype=dtype))
    d = ad.model.hidden_size
    for vec in (_rand(2, d, seed=1).to(dtype), _rand(1, 3, d, seed=2).to(dtype)):  # per-sample, per-token
        for ref in ad.blocks():
            mods = (ref.module.img_mod, ref.module.txt_mod) if ref.kind == "double" else (ref.module.modulation,)
            for mod in mods:
                outs, module_flops = _flops(mod, vec)
                want = [m.gate for m in outs if m is not None]
                got, gate_flops = _flops(modulation_gates, mod, vec)
                # only the rows from the first gate to the last: 4 of 6 chunks (double), 1 of 3 (single)
                assert gate_flops * (6 if ref.kind == "double" else 3) == module_flops * (4 if ref.kind == "double" else 1)
                assert len(got) == len(want) == (2 if ref.kind == "double" else 1)
                for g, w in zip(got, want):
                    assert torch.equal(g, w), (ref.patch_key, "gate differs from the modulation's chunk")


def test_flux_forecast_gates_run_the_module_where_comfy_casts_its_weights():
    """A model built with ComfyUI's manual-cast ops (fp16 weights computed in fp32): the stored rows
    are not what the module multiplies by, so the module runs and the gates are its chunks."""
    from fastdit.adapters.flux import modulation_gates
    ad = adapters.for_model(tm.make_model("flux", dtype=torch.float16, manual_cast_dtype=torch.float32))
    vec = _rand(2, ad.model.hidden_size, seed=1)
    for ref in ad.blocks():
        mod = ref.module.img_mod if ref.kind == "double" else ref.module.modulation
        assert getattr(mod.lin, "comfy_cast_weights", False)
        outs, module_flops = _flops(mod, vec)
        got, gate_flops = _flops(modulation_gates, mod, vec)
        assert gate_flops == module_flops
        for g, w in zip(got, [m.gate for m in outs if m is not None]):
            assert g.dtype == torch.float32 and torch.equal(g, w)


def test_plain_linear_weights_only_for_plain_forwards():
    import comfy.ops
    from fastdit.adapters.gates import linear_chunks, plain_linear_weights
    x = _rand(2, 8)
    plain = comfy.ops.disable_weight_init.Linear(8, 12)
    torch.nn.init.normal_(plain.weight)
    torch.nn.init.normal_(plain.bias)
    assert plain_linear_weights(plain, x) is not None
    assert plain_linear_weights(plain, x.bfloat16()) is None            # another dtype: the module casts or fails
    cast = comfy.ops.manual_cast.Linear(8, 12)
    assert plain_linear_weights(cast, x) is None                        # casts weights at run time

    class OwnForward(torch.nn.Linear):                                  # a pack's layer with its own math
        def forward(self, x):
            return super().forward(x) * 2
    assert plain_linear_weights(OwnForward(8, 12), x) is None

    class Quantized(torch.Tensor):
        pass
    q = comfy.ops.disable_weight_init.Linear(8, 12)
    q.weight = torch.nn.Parameter(plain.weight.detach().clone().as_subclass(Quantized), requires_grad=False)
    assert plain_linear_weights(q, x) is None                           # tensor subclasses (quantized, GGUF)
    chunks = linear_chunks(plain, x, 3, (0, 2))
    full = plain(x).chunk(3, dim=-1)
    assert torch.equal(chunks[0], full[0]) and torch.equal(chunks[1], full[2])
    assert linear_chunks(cast, x, 3, (2,)) is None


def test_qwen_forecast_gates_equal_the_modulation_chunks():
    from fastdit.adapters.qwen_image import _qwen_gates, _qwen_stream_gates
    ad = adapters.for_model(tm.make_model("qwen_image", dtype=torch.bfloat16))
    temb = _rand(2, ad.model.inner_dim, seed=1).bfloat16()
    for ref in ad.blocks():
        for mod in (ref.module.img_mod, ref.module.txt_mod):
            out, module_flops = _flops(mod, temb)
            want = _qwen_gates(out)
            got, gate_flops = _flops(_qwen_stream_gates, mod, temb)
            assert gate_flops * 6 == module_flops * 4   # chunks 2 to 5 of 6
            assert all(torch.equal(g, w) for g, w in zip(got, want)) and len(got) == 2
