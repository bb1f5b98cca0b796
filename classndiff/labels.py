"""The condition vocabularies: diagnosis, skin-tone group and sex, each with a null id.

The null id is the last index of each table. It is what a blank condition maps to at
sampling time, and what a condition is replaced by when it is dropped in training, which
is what makes classifier-free guidance and "any" conditions possible.
"""

from __future__ import annotations

DX_CODES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
DX_NAMES: dict[str, str] = {
    "akiec": "actinic keratosis / intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}
MALIGNANT_DX: tuple[str, ...] = ("akiec", "bcc", "mel")
TONE_GROUPS: tuple[str, ...] = ("lighter", "brown", "darker")
SEXES: tuple[str, ...] = ("female", "male")

DX_NULL = len(DX_CODES)
TONE_NULL = len(TONE_GROUPS)
SEX_NULL = len(SEXES)

# Values that mean "no condition" when they come from a user or from metadata.
BLANK_VALUES = {None, "", "any", "unknown", "none", "null"}


class UnknownLabelError(ValueError):
    """A condition value that is not in its vocabulary."""


def _encode(value: str | int | None, vocabulary: tuple[str, ...], what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= len(vocabulary):
            return value
        raise UnknownLabelError(f"{what} id {value} is out of range 0..{len(vocabulary)}")
    if value is None or str(value).strip().lower() in BLANK_VALUES:
        return len(vocabulary)
    key = str(value).strip().lower()
    if key not in vocabulary:
        choices = ", ".join(vocabulary)
        raise UnknownLabelError(f"unknown {what} {value!r}: choose one of {choices}, or 'any'")
    return vocabulary.index(key)


def encode_dx(value: str | int | None) -> int:
    """Diagnosis code (e.g. "mel") → id; blank → the null id."""
    return _encode(value, DX_CODES, "diagnosis")


def encode_tone(value: str | int | None) -> int:
    """Skin-tone group ("lighter", "brown", "darker") → id; blank or unknown → the null id."""
    return _encode(value, TONE_GROUPS, "skin-tone group")


def encode_sex(value: str | int | None) -> int:
    """Sex ("female", "male") → id; blank or unknown → the null id."""
    return _encode(value, SEXES, "sex")


def malignant_mask() -> list[bool]:
    """Which of the DX_CODES count as malignant (mel, bcc, akiec)."""
    return [code in MALIGNANT_DX for code in DX_CODES]
