"""Cost of a dynamic-resolution run from its token counts.

Per transformer block a call of N tokens (text + image) costs about 24 d^2 N (linear layers) +
4 N^2 d (attention) FLOPs; the ratio against the same calls at full resolution, and against a
50-step full-resolution sampler, is what the node logs.
"""


def call_cost(tokens, width):
    return 24 * width * width * tokens + 4 * tokens * tokens * width


def run_costs(layouts, width):
    """(cost, full-resolution cost) summed over every model call of the run."""
    cost = full = 0.0
    for layout in layouts:
        for n_text, image, image_full, batch in layout.calls:
            cost += batch * call_cost(n_text + image, width)
            full += batch * call_cost(n_text + image_full, width)
    return cost, full


def _tokens(layout):
    """Image tokens per sample of a layout: one count, or the range of a ragged batch."""
    if layout.all_fine:
        return f"{layout.image_tokens}"
    counts = layout.token_counts
    return f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}..{max(counts)}"


def cost_line(run):
    plan = run.plan
    costs, full = run_costs(run.layouts, run.adapter.hidden_size)
    tokens = [_tokens(layout) for layout in run.layouts]
    steps = plan.steps
    ratio = full / costs if costs else 1.0
    return (f"Fresco: {steps} steps = {plan.coarse} coarse + {plan.progressive} progressive + {plan.full} full "
            f"(factor {run.grid.factor}, {run.options.selection} selection); image tokens per layout "
            f"{' -> '.join(tokens)} of {run.grid.full_tokens}; cost {1 / ratio:.3f} of {steps} full-resolution "
            f"steps ({ratio:.2f}x), {ratio * 50 / steps:.2f}x against 50 steps")
