"""ComfyUI's own range and option checks stay on for every input of the pack's nodes; the pack's
custom checks cover only the inputs they name (ComfyUI skips its checks for those) and still run.

Graphs go through ComfyUI's real validator (execution.validate_prompt) and executor."""
import asyncio
import inspect

import pytest

from fastdit.testing.comfy_env import GraphError, execute
from fastdit.testing.tiny_models import FAMILIES

# Inputs each custom check takes by name; ComfyUI does not range/option-check these itself.
CUSTOM_CHECKED = {
    "FastDiTTestModel": {"family", "frames"},
    "FastDiTDemoScene": {"prompt", "edit"},
    "FastDiTDemoTextEncode": {"prompt"},
    "FastDiTFrescoKSampler": {"stage_split"},
    "FastDiTFrescoSampler": {"stage_split"},
}


def _node_errors(graph):
    """ComfyUI's validation errors {node_id: [(type, input name, message + details)]}."""
    import execution
    valid, err, _, node_errors = asyncio.run(execution.validate_prompt("input-checks", graph, None))
    assert valid == (not node_errors), (err, node_errors)
    return {nid: [(e["type"], e["extra_info"].get("input_name"), f"{e['message']}: {e['details']}")
                  for e in v["errors"]] for nid, v in node_errors.items()}


def test_custom_checks_name_only_their_inputs(pack_nodes):
    from comfy_api.internal import first_real_override
    found = {}
    for node_id, cls in pack_nodes.items():
        fn = first_real_override(cls, "validate_inputs")
        if fn is None:
            continue
        spec = inspect.getfullargspec(fn)
        assert spec.varkw is None, f"{node_id}.validate_inputs takes **{spec.varkw}: ComfyUI would skip all its checks"
        found[node_id] = set(spec.args) - {"cls"}
    assert found == CUSTOM_CHECKED


# -- FastDiTTestModel ----------------------------------------------------------------------------

def _test_model(**inputs):
    params = {"family": "flux", "seed": 0, "width": 16, "height": 16, "frames": 1, "batch_size": 1}
    params.update(inputs)
    return {"1": {"class_type": "FastDiTTestModel", "inputs": params},
            "2": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 3], "vae": ["1", 4]}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}


@pytest.mark.parametrize("name,value,kind,message", [
    ("width", 4096, "value_bigger_than_max", "Value 4096 bigger than max of 512"),
    ("width", 0, "value_smaller_than_min", "Value 0 smaller than min of 2"),
    ("height", 1024, "value_bigger_than_max", "Value 1024 bigger than max of 512"),
    ("batch_size", 0, "value_smaller_than_min", "Value 0 smaller than min of 1"),
    ("seed", -1, "value_smaller_than_min", "Value -1 smaller than min of 0"),
])
def test_test_model_ranges_are_checked_by_comfyui(name, value, kind, message):
    assert _node_errors(_test_model(**{name: value})) == {"1": [(kind, name, f"{message}: {name}")]}
    with pytest.raises(GraphError, match=message):
        execute(_test_model(**{name: value}))


@pytest.mark.parametrize("inputs,message", [
    ({"family": "sd15"}, "family must be one of flux, flux_kontext, qwen_image, qwen_image_edit, hunyuan_video, "
                         "wan, not 'sd15'"),
    ({"family": "hunyuan_video", "frames": 65}, "frames must be between 1 and 64, not 65"),
    ({"family": "wan", "frames": 0}, "frames must be between 1 and 64, not 0"),
    ({"family": "flux", "frames": 2}, "frames > 1 needs a video family (hunyuan_video, wan); flux makes images"),
])
def test_test_model_custom_checks_still_run(inputs, message):
    errors = _node_errors(_test_model(**inputs))["1"]
    assert {e[0] for e in errors} == {"custom_validation_failed"}
    assert all(message in e[2] for e in errors), errors


@pytest.mark.parametrize("family", FAMILIES)
def test_test_model_accepts_every_family(family):
    frames = 2 if family in ("hunyuan_video", "wan") else 1
    assert _node_errors(_test_model(family=family, frames=frames)) == {}


def test_test_model_checks_a_linked_frames_value_when_it_runs(pack_nodes):
    with pytest.raises(ValueError, match="frames > 1 needs a video family"):
        pack_nodes["FastDiTTestModel"].execute(family="qwen_image", seed=0, width=8, height=8, frames=3, batch_size=1)


# -- demo nodes ----------------------------------------------------------------------------------

PROMPT = "a large red circle at the center, on a white background"


def _scene(**inputs):
    params = {"prompt": PROMPT, "width": 64, "height": 64, "edit": ""}
    params.update(inputs)
    return {"1": {"class_type": "FastDiTDemoScene", "inputs": params},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}


@pytest.mark.parametrize("name,value,kind,message", [
    ("width", 4096, "value_bigger_than_max", "Value 4096 bigger than max of 2048"),
    ("width", 0, "value_smaller_than_min", "Value 0 smaller than min of 8"),
    ("height", 2050, "value_bigger_than_max", "Value 2050 bigger than max of 2048"),
])
def test_demo_scene_sizes_are_checked_by_comfyui(name, value, kind, message):
    assert _node_errors(_scene(**{name: value})) == {"1": [(kind, name, f"{message}: {name}")]}
    with pytest.raises(GraphError, match=message):
        execute(_scene(**{name: value}))


def test_demo_scene_custom_checks_still_run():
    errors = _node_errors(_scene(prompt="a pink elephant at the top"))["1"]
    assert errors and all(e[0] == "custom_validation_failed" and "cannot read the object" in e[2] for e in errors)
    errors = _node_errors(_scene(edit="remove the triangle"))["1"]
    assert errors and all("'remove the triangle' needs" in e[2] for e in errors)
    assert _node_errors(_scene(edit="make the red circle blue")) == {}
    assert _node_errors(_scene(edit="   ")) == {}     # blank = no edit, as when the node runs
    assert len(execute(_scene(edit="   ", width=40, height=24))["2"]["images"]) == 1


def _encode(model_name="demo-flux", prompt=PROMPT):
    return {
        "1": {"class_type": "FastDiTDemoLoader", "inputs": {"model_name": "demo-flux"}},
        "2": {"class_type": "FastDiTDemoTextEncode", "inputs": {"model_name": model_name, "prompt": prompt}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0],
                                                   "latent_image": ["3", 0], "seed": 1, "steps": 1, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 1]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }


def _combo_refused(graph, node_id, name, message):
    """A bad V3 combo value: ComfyUI versions after 0.3.75 refuse it themselves (0.3.75 checks only
    list-typed V1 combos); otherwise the node's own check must fail the run with `message`."""
    errors = _node_errors(graph)
    if errors:
        assert [(e[0], e[1]) for e in errors[node_id]] == [("value_not_in_list", name)], errors
    else:
        with pytest.raises(GraphError, match=message):
            execute(graph)


def test_demo_text_encode_model_name_is_not_exempted():
    _combo_refused(_encode(model_name="demo-sdxl"), "2", "model_name",
                   "model_name must be one of demo-flux, demo-kontext(, [a-z-]+)*, not 'demo-sdxl'")


def test_demo_loader_names_its_models(pack_nodes):
    with pytest.raises(ValueError, match="model_name must be one of demo-flux, demo-kontext(, [a-z-]+)*, not 'demo-sdxl'"):
        pack_nodes["FastDiTDemoLoader"].execute(model_name="demo-sdxl")


def test_demo_text_encode_custom_check_still_runs():
    errors = _node_errors(_encode(prompt="a pink elephant at the top"))["2"]
    assert errors and all(e[0] == "custom_validation_failed" and "cannot read the object" in e[2] for e in errors)
    assert _node_errors(_encode()) == {}
    assert _node_errors(_encode(prompt="")) == {}     # the unconditional prompt


# -- Fresco stage split --------------------------------------------------------------------------

def test_stage_split_accepts_three_proportions():
    from fastdit.dynres.stages import parse_split
    assert parse_split("5/6/7") == (5.0, 6.0, 7.0)
    assert parse_split(" 0 , 2.5 , 1e1 ") == (0.0, 2.5, 10.0)


@pytest.mark.parametrize("text,problem", [
    ("nan/1/1", "'nan' is not a finite number"),
    ("1/inf/1", "'inf' is not a finite number"),
    ("1/1/-infinity", "'-infinity' is not a finite number"),
    ("-1/2/3", "'-1' is negative"),
    ("5//7", "part 2 is empty"),
    ("5/6/7/", "part 4 is empty"),
    ("", "part 1 is empty"),
    ("5/6", "has 2 parts"),
    ("5/6/7/8", "has 4 parts"),
    ("five/6/7", "'five' is not a number"),
    ("5/6/0", "the full-resolution part must be > 0"),
])
def test_stage_split_rejects_bad_parts_naming_the_format(text, problem):
    from fastdit.dynres.stages import parse_split
    with pytest.raises(ValueError) as e:
        parse_split(text)
    assert problem in str(e.value)
    assert "coarse/progressive/full" in str(e.value) and "e.g. 5/6/7" in str(e.value)


def _fresco(stage_split):
    return {
        "1": {"class_type": "FastDiTTestModel", "inputs": {"family": "flux", "seed": 0, "width": 8, "height": 8,
                                                           "frames": 1, "batch_size": 1}},
        "2": {"class_type": "FastDiTFrescoKSampler", "inputs": {
            "model": ["1", 0], "positive": ["1", 1], "negative": ["1", 2], "latent_image": ["1", 3], "seed": 0,
            "steps": 4, "cfg": 1.0, "scheduler": "simple", "preset": "custom", "stage_split": stage_split,
            "coarse_factor": "2", "first_upsample": 0.3, "upsample_per_step": 0.1, "selection": "variance",
            "renoise": "unified", "expansion": "hadamard", "transition": "same-t"}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 4]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


def test_fresco_node_refuses_a_nan_split_before_running():
    errors = _node_errors(_fresco("nan/1/1"))
    assert list(errors) == ["2"] and len(errors["2"]) == 1
    kind, name, message = errors["2"][0]
    assert kind == "custom_validation_failed" and name == "stage_split"
    assert "'nan' is not a finite number" in message and "e.g. 5/6/7" in message
    assert _node_errors(_fresco("1/1/2")) == {}


@pytest.mark.parametrize("name,value,message", [  # message: the node's own, on ComfyUI 0.3.75
    ("transition", "same_t", "Fresco transition must be one of same-t, SNR-matched, not 'same_t'"),
    ("coarse_factor", "3", "Fresco coarse_factor must be one of 2, 4, not '3'"),
    ("selection", "attention", "Fresco option selection must be one of variance, random, edge, not 'attention'"),
])
def test_fresco_combo_values_get_a_clear_error(name, value, message):
    graph = _fresco("1/1/2")
    graph["2"]["inputs"][name] = value
    _combo_refused(graph, "2", name, message)
