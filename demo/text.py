"""Text conditioning for the demo world without downloads: a learned embedding of the grammar.

A prompt becomes TOKENS context tokens (the FLUX "T5" stream) and a pooled vector (the "CLIP"
vector): one token for the background, one per object (up to three) and, for edits, one for the
action and one for the object it targets. Each token is the sum of the embeddings of its words
(colour, shape, position, size, ...) and of its slot, so attributes stay bound to their object even
though FLUX places every text token at the same RoPE position. The pooled vector is the mean token.
Unused slots hold the slot's "absent" token; the unconditional prompt (CFG) is all "null".
"""
import torch
from torch import nn

from . import world

TOKENS = 4
WORDS_PER_TOKEN = 4
SLOTS = ("background", "object 1", "object 2", "object 3", "edit", "edit target")
EMBED_DIM = 64


def _vocabulary():
    words = ["<pad>", "<null>", "<absent>"]
    words += [f"color:{c}" for c in world.COLORS] + [f"shape:{s}" for s in world.SHAPES]
    words += [f"position:{p}" for p in world.POSITIONS] + [f"size:{s}" for s in world.SIZES]
    words += [f"background:{c}" for c in world.BACKGROUND_COLORS] + [f"to:{c}" for c in world.BACKGROUND_COLORS]
    words += ["background:flat"] + [f"gradient:{g}" for g in world.GRADIENTS]
    words += ["edit:recolor", "edit:remove", "edit:move"] + [f"direction:{d}" for d in world.DIRECTIONS]
    return words


VOCABULARY = _vocabulary()
_INDEX = {w: i for i, w in enumerate(VOCABULARY)}


NULL_PROMPT = [(["<null>"], slot) for slot in ("background", "object 1", "object 2", "object 3")]


def encode(tokens, index=None, width=WORDS_PER_TOKEN):
    """(word ids [len, width], slot ids [len]) of (words, slot) pairs; `index` maps a word to its id
    (default: this vocabulary), short tokens are padded with "<pad>" (id 0)."""
    index = _INDEX if index is None else index
    return (torch.tensor([[index[w] for w in words] + [0] * (width - len(words)) for words, _ in tokens]),
            torch.tensor([SLOTS.index(slot) for _, slot in tokens]))


def scene_tokens(scene):
    """(word ids [TOKENS, WORDS_PER_TOKEN], slot ids [TOKENS]) for a Scene."""
    bg = scene.background
    toks = [([f"background:{bg.color}", f"to:{bg.color2}" if bg.color2 else "background:flat"]
             + ([f"gradient:{bg.direction}"] if bg.color2 else []), "background")]
    for i in range(world.MAX_OBJECTS):
        slot = f"object {i + 1}"
        if i < len(scene.objects):
            o = scene.objects[i]
            toks.append(([f"color:{o.color}", f"shape:{o.shape}", f"position:{o.position}", f"size:{o.size}"], slot))
        else:
            toks.append((["<absent>"], slot))
    return encode(toks)


def edit_tokens(edit):
    arg = {"recolor": f"color:{edit.argument}", "move": f"direction:{edit.argument}"}.get(edit.action)
    toks = [([f"edit:{edit.action}"] + ([arg] if arg else []), "edit"),
            ([f"shape:{edit.shape}"] + ([f"color:{edit.color}"] if edit.color else []), "edit target"),
            (["<absent>"], "object 2"), (["<absent>"], "object 3")]
    return encode(toks)


def null_tokens():
    return encode(NULL_PROMPT)


def tokens_for(prompt):
    """Token ids of a scene prompt, an edit instruction, or "" (the unconditional prompt)."""
    if not prompt.strip():
        return null_tokens()
    try:
        return scene_tokens(world.parse(prompt))
    except world.PromptError as scene_error:
        try:
            return edit_tokens(world.parse_edit(prompt))
        except world.PromptError:
            raise scene_error from None


class TextEncoder(nn.Module):
    """The demo world's encoder. A subclass may set a longer `vocabulary` / `slot_names` (this one's
    words first, so its rows line up) and its own `tokens` (demo/open_text.py)."""
    vocabulary = VOCABULARY
    slot_names = SLOTS

    def __init__(self, dim=EMBED_DIM):
        super().__init__()
        self.words = nn.Embedding(len(self.vocabulary), dim, padding_idx=0)
        self.slots = nn.Embedding(len(self.slot_names), dim)
        nn.init.normal_(self.words.weight, std=1.0)
        nn.init.normal_(self.slots.weight, std=1.0)
        with torch.no_grad():
            self.words.weight[0].zero_()

    def forward(self, word_ids, slot_ids):
        """word ids [B,T,W], slot ids [B,T] -> (context [B,T,dim], pooled [B,dim])."""
        ctx = self.words(word_ids).sum(-2) + self.slots(slot_ids)
        return ctx, ctx.mean(1)

    def tokens(self, prompt):
        """(word ids [T,W], slot ids [T]) of a prompt."""
        return tokens_for(prompt)

    @torch.no_grad()
    def conditioning(self, prompt):
        """ComfyUI CONDITIONING for one prompt: [[context [1,T,dim], {"pooled_output": [1,dim]}]]."""
        w, s = self.tokens(prompt)
        ctx, pooled = self(w[None].to(self.words.weight.device), s[None].to(self.words.weight.device))
        return [[ctx.float().cpu(), {"pooled_output": pooled.float().cpu()}]]
