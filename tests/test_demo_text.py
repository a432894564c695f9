"""Text conditioning of the demo world: grammar tokens, slots, the unconditional prompt."""
import pytest
import torch

from demo import text, world


def test_tokens_bind_attributes_per_object():
    a, _ = text.tokens_for("a red circle at the top, a blue square at the left, on a white background")
    b, _ = text.tokens_for("a blue circle at the top, a red square at the left, on a white background")
    assert a.shape == (text.TOKENS, text.WORDS_PER_TOKEN)
    assert not torch.equal(a, b)  # same bag of words, different objects
    assert sorted(a[1].tolist()) != sorted(b[1].tolist())


def test_absent_objects_edits_and_unconditional_are_distinct():
    one, slots = text.tokens_for("a red circle at the top, on a white background")
    assert slots.tolist() == [0, 1, 2, 3]
    assert one[2, 0] == one[3, 0] == text.VOCABULARY.index("<absent>")
    edit, eslots = text.tokens_for("make the circle blue")
    assert eslots.tolist()[:2] == [text.SLOTS.index("edit"), text.SLOTS.index("edit target")]
    named, _ = text.tokens_for("make the red circle blue")  # the target's colour joins its token
    assert torch.equal(named[0], edit[0]) and set(named[1].tolist()) - {0} == \
        {text.VOCABULARY.index("shape:circle"), text.VOCABULARY.index("color:red")}
    null, _ = text.tokens_for("  ")
    assert (null[:, 0] == text.VOCABULARY.index("<null>")).all()
    with pytest.raises(world.PromptError, match="cannot read the object"):
        text.tokens_for("a red blob at the top")


def test_encoder_gives_flux_context_and_pooled_vector():
    enc = text.TextEncoder()
    cond = enc.conditioning("a large green diamond at the bottom right, on a gray background")
    ctx, extras = cond[0]
    assert ctx.shape == (1, text.TOKENS, text.EMBED_DIM) and extras["pooled_output"].shape == (1, text.EMBED_DIM)
    assert torch.allclose(extras["pooled_output"], ctx.mean(1))
    other = enc.conditioning("a large green diamond at the bottom left, on a gray background")[0][0]
    assert (ctx - other).abs().sum() > 0
