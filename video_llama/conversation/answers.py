"""How a free answer names a label: both read as normalised text, so "Greet_Mode!" answers
``greet_mode`` and "The action is falling down." answers "Falling down". Evaluation, the mode
selector's label map and ``prepare``'s check for labels that read alike all read answers so."""

import re


def normalize_answer(text):
    """Lower case, underscores and hyphens as spaces, no punctuation, single spaces."""
    text = text.lower().replace("_", " ").replace("-", " ")
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def match_answer(answer, labels):
    """The label an answer names, or None. Exact (normalised) match first; otherwise the single
    label whose words appear in the answer ("The action is falling down." → "Falling down")."""
    norm = normalize_answer(answer)
    by_norm = {normalize_answer(label): label for label in labels}
    if norm in by_norm:
        return by_norm[norm]
    found = [key for key in by_norm if key and re.search(rf"\b{re.escape(key)}\b", norm)]
    # "fall" inside "fall down" is not a second label; two unrelated labels are ambiguous
    found = [key for key in found if not any(key != other and key in other for other in found)]
    return by_norm[found[0]] if len(found) == 1 else None
