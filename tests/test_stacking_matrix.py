"""Every pair of the pack's nodes with each other and with ComfyUI's EasyCache, LazyCache, context
windows, LoRA and ControlNet works or is refused with an error naming both (the rule and its terms:
fastdit/testing/stacking.py). Graphs of real nodes on the tiny FLUX model through ComfyUI's
executor; the README's compatibility table must say what this matrix measures."""
import math
import os

import pytest

from fastdit.testing import stacking as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the pairs refused on purpose (all orders); every other pair must work
REFUSED = {frozenset(p) for p in (("HiCache", "SVD-Cache"), ("HiCache", "EasyCache"), ("HiCache", "LazyCache"),
                                  ("SVD-Cache", "EasyCache"), ("SVD-Cache", "LazyCache"), ("Fresco", "EasyCache"),
                                  ("Fresco", "LazyCache"), ("Fresco", "context windows"), ("Fresco", "ControlNet"))}
FRESCO_STACKS = [s for s in st.all_stacks() if "Fresco" in s]


@pytest.fixture(scope="module")
def matrix():
    """The matrix; the SVD-Cache bases its calibrations save are removed afterwards (other tests pick
    saved bases by name)."""
    import folder_paths
    folders = folder_paths.get_folder_paths("fastdit_svd_bases")
    before = {(f, n) for f in folders if os.path.isdir(f) for n in os.listdir(f)}
    yield st.StackingMatrix()
    for folder, name in {(f, n) for f in folders if os.path.isdir(f) for n in os.listdir(f)} - before:
        os.remove(os.path.join(folder, name))


def _id(stack):
    return "+".join(p.replace(" ", "_") for p in stack)


@pytest.mark.parametrize("stack", st.all_stacks(), ids=_id)
def test_pair_works_or_is_refused(matrix, stack):
    outcome = matrix.measure(stack)
    assert outcome.verdict != "broken", outcome.line()
    expected = "refused" if frozenset(stack) in REFUSED else "works"
    assert outcome.verdict == expected, outcome.line()
    if expected == "refused":
        assert outcome.error.exception_type.endswith(".UnsupportedInputError")
        for part in set(stack):
            assert st.MESSAGE_NAMES[part].lower() in outcome.error.message.lower(), outcome.line()
    else:
        assert math.isfinite(outcome.psnr) and outcome.psnr >= outcome.floor, outcome.line()


@pytest.mark.parametrize("stack", FRESCO_STACKS, ids=_id)
def test_fresco_sampler_in_sampler_custom_agrees_with_its_ksampler(matrix, stack):
    via_ksampler, via_sampler = matrix.measure(stack), matrix.measure(stack, fresco_entry="sampler")
    assert via_sampler.verdict == via_ksampler.verdict, via_sampler.line()
    if via_sampler.verdict == "works":   # the same noise and sigmas: the same image
        assert via_sampler.psnr == pytest.approx(via_ksampler.psnr, abs=0.02)
    else:
        assert via_sampler.reason == via_ksampler.reason


@pytest.mark.parametrize("part", sorted(st.CONTENT))
def test_content_parts_change_the_image(matrix, part):
    """LoRA, ControlNet and context windows each move the bare model's image, so a stack that
    dropped one would fail against its baseline."""
    assert matrix.psnr((part,), reference=()) < 30.0


@pytest.mark.parametrize("stack", [s for s in st.all_stacks() if st.CONTENT & set(s) and frozenset(s) not in REFUSED],
                         ids=_id)
def test_working_stacks_keep_their_content(matrix, stack):
    """An accelerator that dropped the LoRA, the ControlNet or the windows would still be near the bare
    model: each working stack is clearly closer to its own baseline than to the bare model's."""
    assert matrix.psnr(stack) > matrix.psnr(stack, reference=()) + 2.0


def test_accelerators_alone_are_close_to_the_plain_model(matrix):
    alone = {p: matrix.alone(p) for p in st.ACCELERATORS}
    assert all(v > 10.0 for v in alone.values()), alone
    assert min(alone.values()) < math.inf, "no accelerator changed the image: nothing was measured"


def test_readme_table_is_what_the_matrix_measures(matrix):
    """Verdicts, reasons and text exactly; PSNRs within 2 dB (ComfyUI versions differ in the last digits)."""
    outcomes = st.run_matrix(matrix)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = st.current_section(f.read())
    difference = st.section_difference(readme, st.readme_section(outcomes))
    assert difference is None, f"README.md's compatibility table is stale ({difference}): run scripts/compat_table.py"


def test_section_difference_catches_a_changed_verdict_or_number():
    written = "x\n| **HiCache** | works (PSNR 24 dB) | refused [1] |\n[1] both replace the transformer blocks."
    assert st.section_difference(written, written.replace("24", "23")) is None
    assert st.section_difference(written, written.replace("24", "21")) == "a PSNR moved from 24 to 21 dB"
    assert st.section_difference(written, written.replace("refused [1]", "works (PSNR 9 dB)")) is not None
    assert st.section_difference(written, written.replace("blocks", "stacks")) is not None


# -- the rule itself, on given numbers and errors -----------------------------------------------------
class _NoRunner:
    def run(self, graph):
        raise AssertionError("no graph should run")


class _Failing:
    def __init__(self, error):
        self.error = error

    def run(self, graph):
        raise self.error


def _matrix(psnrs, runner=None):
    m = st.StackingMatrix(files={"LoRA": "l", "hint": "h"}, runner=runner or _NoRunner())
    for stack, value in psnrs.items():
        m.record(stack, value)
    return m


def test_a_stack_more_than_6_db_below_its_weaker_part_is_broken():
    m = _matrix({("HiCache",): 24.0, ("EasyCache",): 30.0, ("EasyCache", "HiCache"): 17.9,
                 ("HiCache", "EasyCache"): 18.1})
    low, ok = m.measure(("EasyCache", "HiCache")), m.measure(("HiCache", "EasyCache"))
    assert (low.verdict, low.floor) == ("broken", 18.0) and "more than 6 dB below" in low.why
    assert ok.verdict == "works" and ok.alone == {"EasyCache": 30.0, "HiCache": 24.0}
    assert st.cell_text([low, ok]).startswith("EasyCache then HiCache: BROKEN")


def test_content_parts_never_set_the_floor():
    m = _matrix({("HiCache",): 24.0, ("LoRA", "HiCache"): 18.5})
    out = m.measure(("LoRA", "HiCache"))
    assert out.verdict == "works" and out.floor == 18.0 and out.alone == {"HiCache": 24.0}
    assert m.alone("LoRA") == math.inf


@pytest.mark.parametrize("error,verdict", [
    (st.GraphFailed("x.UnsupportedInputError", "Fresco cannot use ControlNet: residuals.", "FastDiTFrescoKSampler"),
     "refused"),
    (st.GraphFailed("x.UnsupportedInputError", "Fresco cannot use this: residuals.", "FastDiTFrescoKSampler"),
     "broken"),                                          # names only one of the two
    (st.GraphFailed("RuntimeError", "Fresco and ControlNet: shape mismatch", "FastDiTFrescoKSampler"), "broken"),
])
def test_a_refusal_must_be_the_pack_error_naming_both_parts(error, verdict):
    out = _matrix({}, _Failing(error)).measure(("ControlNet", "Fresco"))
    assert out.verdict == verdict
    if verdict == "refused":
        assert out.reason == "residuals" and st.cell_text([out]) == "refused: residuals"


def test_bad_stacks_name_what_is_supported():
    with pytest.raises(ValueError, match="supported: HiCache, SVD-Cache, Fresco, EasyCache"):
        st.compare_graph(("TeaCache",), {})
    with pytest.raises(ValueError, match="Fresco is the sampler"):
        st.compare_graph(("Fresco", "LoRA"), {})
    with pytest.raises(ValueError, match="rows are HiCache, SVD-Cache, Fresco"):
        st.stacks_of("LoRA", "HiCache")
    with pytest.raises(ValueError, match="fresco_entry must be one of ksampler, sampler"):
        st.compare_graph(("Fresco",), {}, fresco_entry="guider")


def test_replace_section_needs_one_pair_of_markers():
    text = f"a\n{st.BEGIN}\nold\n{st.END}\nb"
    assert st.replace_section(text, "\nnew\n") == f"a\n{st.BEGIN}\nnew\n{st.END}\nb"
    with pytest.raises(ValueError, match="expected one"):
        st.replace_section("no markers", "x")
