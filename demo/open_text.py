"""Text conditioning for the open world (demo/open_world.py): the demo encoder with more words.

The vocabulary is the demo world's (demo/text.py) followed by the open world's new words, so an
encoder of the demo world can seed this one row for row (`from_demo`). A prompt becomes 4 context
tokens, as in the demo world: the background (its colour and texture where said) and one per object
slot. An object's token sums the words the prompt says about it (colour, shape, position, size,
fill) and its slot; what is left open adds nothing. Slots of objects the prompt does not list hold
"<absent>"; "some shapes" puts "<open>" in all three object slots. The empty prompt is all "<null>".
"""
import torch

from . import open_world, text

TOKENS = 4
WORDS_PER_TOKEN = 6
NEW_WORDS = ["<open>", "object:shape"] + [f"fill:{t}" for t in open_world.TEXTURES] \
    + [f"texture:{t}" for t in open_world.TEXTURES]
VOCABULARY = text.VOCABULARY + NEW_WORDS
_INDEX = {w: i for i, w in enumerate(VOCABULARY)}
SLOTS = text.SLOTS


def scene_tokens(scene):
    """(word ids [TOKENS, WORDS_PER_TOKEN], slot ids [TOKENS]) for an OpenScene."""
    bg = scene.background
    toks = [(([f"background:{bg.color}"] if bg.color else []) + ([f"texture:{bg.texture}"] if bg.texture else []),
              "background")]
    for i in range(open_world.MAX_OBJECTS):
        slot = f"object {i + 1}"
        if scene.objects is None:
            toks.append((["<open>"], slot))
        elif i < len(scene.objects):
            o = scene.objects[i]
            words = ["object:shape"] + [f"{k}:{v}" for k, v in (("color", o.color), ("shape", o.shape),
                                                                  ("position", o.position), ("size", o.size),
                                                                  ("fill", o.fill)) if v]
            toks.append((words, slot))
        else:
            toks.append((["<absent>"], slot))
    return _encode(toks)


def null_tokens():
    return _encode(text.NULL_PROMPT)


def _encode(toks):
    return text.encode(toks, _INDEX, WORDS_PER_TOKEN)


def tokens_for(prompt):
    """Token ids of an open-world prompt, or "" (the unconditional prompt)."""
    if not prompt.strip():
        return null_tokens()
    return scene_tokens(open_world.parse(prompt))


class OpenTextEncoder(text.TextEncoder):
    vocabulary = VOCABULARY
    slot_names = SLOTS

    def tokens(self, prompt):
        return tokens_for(prompt)


def from_demo(encoder):
    """An OpenTextEncoder whose rows for the demo world's words and slots are `encoder`'s."""
    out = OpenTextEncoder(encoder.words.embedding_dim)
    with torch.no_grad():
        out.words.weight.mul_(0.5)  # the new words start small beside the trained ones ...
        out.words.weight[_INDEX["object:shape"]] = 0  # ... and "an object is here" at zero
        out.words.weight[:len(text.VOCABULARY)] = encoder.words.weight.float()
        out.slots.weight[:] = encoder.slots.weight.float()
    return out
