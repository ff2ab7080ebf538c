"""Generates the shared test vectors in core/tests/vectors/*.json from the README's definitions,
computed here with Python's `xxhash` (the reference xxh3), `rapidfuzz` (Jaro-Winkler) and plain
float arithmetic: never from pg_ab's own code. Read by core/tests/vectors.rs (the Rust functions),
tests/integration/test_hashing.py and tests/integration/test_vectors.py (the SQL functions);
test_vectors.py also reruns this script and compares its output with the committed files.
Regenerate with (packages from tests/requirements.txt):

    .run/venv/bin/python core/tests/vectors/gen_vectors.py [output directory]

Every file is {"description", "source", "cases": [...]}. Floats are written with repr, so they
read back as the same doubles. Strings never contain NUL (PostgreSQL text cannot hold it).
"""
import json
import string
import sys
from pathlib import Path

import xxhash
from rapidfuzz.distance import JaroWinkler

# ---------------------------------------------------------------------------------------------
# Hashing (README, "Hashing"): key(a, b) = UTF-8(a) ‖ 0x00 ‖ UTF-8(b); h = XXH3_64bits_withSeed.


def key(a, b):
    assert "\x00" not in a and "\x00" not in b
    return a.encode("utf-8") + b"\x00" + b.encode("utf-8")


def h(a, b, seed):
    return xxhash.xxh3_64_intdigest(key(a, b), seed)


def rollout_bucket(flag, unit):
    return h(flag, unit, 0) % 10000


def variant_point(test_id, unit):
    return (h(test_id, unit, 1) >> 11) * 2.0**-53


def slice_score(test_id, unit):
    return h(test_id, unit, 2)


def of_key_length(a, total, fill="u"):
    """A unit b such that the key a ‖ 0x00 ‖ b is `total` bytes long."""
    n = total - 1 - len(a.encode())
    assert n >= 0
    return fill * n


HASH_PAIRS = [
    # The README's table.
    ("ff.ab_routing", "user-1"),
    ("ff.ab_test_t1", "42"),
    ("ff.x", ""),
    ("t1", "42"),
    # Empty sides: the key is then just the separator, or one side and the separator.
    ("", ""),
    ("", "user-1"),
    ("t1", ""),
    # The separator keeps "ab"+"c" and "a"+"bc" apart.
    ("ab", "c"),
    ("a", "bc"),
    # Non-ASCII units: 2-, 3- and 4-byte UTF-8, no Unicode normalisation (NFC é ≠ NFD e + U+0301).
    ("ff.x", "é"),
    ("ff.x", "e\u0301"),
    ("t1", "東京"),
    ("t1", "\U0001F600"),
    ("t1", "\U0001F1E9\U0001F1EA"),
    ("ff.ab_test_münchen", "ü-ñ-日本"),
    ("東京", "大阪"),
    # Whitespace and control characters are ordinary bytes.
    ("t1", " "),
    ("t1", "a\tb\nc"),
    ("ff.x", "\x01\x7f"),
    # Realistic ids.
    ("ff.ab_test_extraction_llm_v2", "550e8400-e29b-41d4-a716-446655440000"),
    ("extraction_llm_v2", "user-123456789"),
    ("ff.ab_test_h", "user-0"),
    ("h", "user-2999"),
]
# Keys whose lengths sit on xxh3's internal size classes (1-3, 4-8, 9-16, 17-128, 129-240, > 240
# bytes) and on the extension's 256-byte stack buffer.
for total in [1, 2, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 256, 257, 1024, 5001]:
    a = "t1" if total > 3 else ""
    HASH_PAIRS.append((a, of_key_length(a, total)))
HASH_PAIRS += [
    ("x" * 255, ""),        # key of 256 bytes from the first side
    ("x" * 256, ""),        # 257
    ("t1", "é東😀" * 100),  # 901 bytes of multi-byte characters
    ("f" * 300, "x" * 5000),
]


def hashing_cases():
    cases = []
    for a, b in HASH_PAIRS:
        cases.append({
            "a": a,
            "b": b,
            "key_bytes": len(key(a, b)),
            "xxh3_seed0": h(a, b, 0),
            "xxh3_seed1": h(a, b, 1),
            "rollout_bucket": rollout_bucket(a, b),
            "variant_point": variant_point(a, b),
            "slice_score": slice_score(a, b),
        })
    return cases


# ---------------------------------------------------------------------------------------------
# Bucketing (README): with weights w₁…wₙ (champion first), the unit gets the first variant with
# wᵢ > 0 for which point × Σw < w₁ + … + wᵢ, in IEEE double arithmetic (sums left to right).


def pick(weights, point):
    total = 0.0
    for w in weights:
        total += w
    target, cumulative = point * total, 0.0
    for i, w in enumerate(weights):
        cumulative += w
        if w > 0 and target < cumulative:
            return i
    raise AssertionError("no variant: the README's rule leaves nothing for this point")


WEIGHT_SETS = [
    ("bk_split", [5.0, 3.0, 2.0]),
    ("bk_even", [1.0, 1.0]),
    ("bk_half", [0.5, 0.5]),
    ("bk_sixty", [60.0, 40.0]),
    ("bk_thirds", [1.0, 1.0, 1.0]),
    ("bk_tenths", [0.1, 0.2, 0.7]),          # 0.1 + 0.2 = 0.30000000000000004
    ("bk_zero_mid", [1.0, 0.0, 1.0]),
    ("bk_zero_first", [0.0, 1.0]),
    ("bk_zero_last", [1.0, 0.0]),
    ("bk_zero_two", [0.0, 0.0, 3.0, 0.0]),
    ("bk_tiny", [1e-9, 1.0]),
    ("bk_ten", [1.0] * 10),
    ("bk_max", [float(i) for i in range(1, 33)]),  # 32 variants, the most a test may have
]
SEARCH_UNITS = [f"user-{i}" for i in range(100000)]
PLAIN_UNITS = ["", "42", "user-1", "é", "東京", "\U0001F600", "x" * 5000]


def bucketing_cases():
    cases = []
    for test_id, weights in WEIGHT_SETS:
        total = sum(weights)
        points = [(variant_point(test_id, u), u) for u in SEARCH_UNITS]
        chosen = list(PLAIN_UNITS)
        # The units whose points fall nearest each boundary between two weighted variants, from
        # below and from above, and the smallest and largest points.
        cumulative = 0.0
        for w in weights[:-1]:
            cumulative += w
            if w == 0 or cumulative >= total:
                continue
            below = [(p, u) for p, u in points if p * total < cumulative]
            above = [(p, u) for p, u in points if p * total >= cumulative]
            if below:
                chosen.append(max(below)[1])
            if above:
                chosen.append(min(above)[1])
        chosen += [min(points)[1], max(points)[1]]
        seen = set()
        for u in chosen:
            if u in seen:
                continue
            seen.add(u)
            point = variant_point(test_id, u)
            cases.append({"test_id": test_id, "unit": u, "weights": weights, "point": point,
                          "variant_index": pick(weights, point)})
    return cases


# ---------------------------------------------------------------------------------------------
# Slices (README): among the active tests, the unit belongs to the one with the highest
# h(test_id, unit, 2); ties go to the smaller test_id.


SLICE_SETS = [["s_a", "s_b", "s_c"], ["extraction_llm_v2", "extraction_rules_v3"], ["only"],
              [f"t{i}" for i in range(10)]]


def pick_slice(tests, unit):
    return max(sorted(tests), key=lambda t: slice_score(t, unit))  # max keeps the first of equals


def slice_cases():
    cases = []
    for tests in SLICE_SETS:
        units = PLAIN_UNITS + [f"user-{i}" for i in range(40)]
        for u in units:
            cases.append({"tests": tests, "unit": u, "test_id": pick_slice(tests, u)})
    return cases


# ---------------------------------------------------------------------------------------------
# Calibration (README, "Entity extraction"): w₁·base + w₂·source reliability + w₃·contextual
# consistency + w₄·temporal coherence + w₅·geographic plausibility, summed left to right in
# doubles, capped at 1.0; default weights 0.4, 0.2, 0.15, 0.15, 0.1.

DEFAULT_WEIGHTS = [0.4, 0.2, 0.15, 0.15, 0.1]
FACTOR_SETS = [
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [1.0, 1.0, 1.0, 1.0, 1.0],   # the weights sum to 1.0000000000000002 in doubles: capped
    [1.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 1.0],
    [0.5, 0.5, 0.5, 0.5, 0.5],
    [0.85, 0.5, 1.0, 1.0, 1.0],  # a 'where' entity from an unknown source
    [0.9, 0.95, 1.0, 0.5, 1.0],
    [0.7, 0.5, 0.0, 1.0, 0.0],
    [0.99, 0.99, 0.99, 0.99, 0.99],
    [1.0, 1.0, 1.0, 1.0, 0.999],
    [0.123456789, 0.987654321, 0.333333333, 0.666666667, 0.5],
    [1e-12, 0.0, 0.0, 0.0, 0.0],
    [0.1, 0.2, 0.3, 0.4, 0.6],
]


def weighted_sum(factors, weights):
    total = 0.0
    for w, f in zip(weights, factors):
        total += w * f
    return total


def calibration_cases():
    return [{"factors": f, "weights": DEFAULT_WEIGHTS, "uncapped": weighted_sum(f, DEFAULT_WEIGHTS),
             "calibrated": min(weighted_sum(f, DEFAULT_WEIGHTS), 1.0)}
            for f in FACTOR_SETS]


# ---------------------------------------------------------------------------------------------
# Deduplication similarity: Jaro-Winkler (prefix scale 0.1, prefix of at most 4, boost only above
# 0.7 — rapidfuzz's definition) of the normalised texts; 1.0 when the normalised texts are equal.
# Normalised text (the rule pg_ab applies): whitespace (Unicode White_Space) and ASCII
# punctuation other than the apostrophe separate words; empty words are dropped; the words are
# joined by one space; each character is lower-cased on its own (full Unicode lower case, no
# context: a final capital sigma becomes σ, not ς); no Unicode normalisation (NFC ≠ NFD).

WHITE_SPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {chr(c) for c in range(0x2000, 0x200B)}
SEPARATORS = WHITE_SPACE | (set(string.punctuation) - {"'"})


def normalize(text):
    words, word = [], []
    for ch in text:
        if ch in SEPARATORS:
            if word:
                words.append("".join(word))
            word = []
        else:
            word.append(ch.lower())  # one character at a time: no final-sigma context
    if word:
        words.append("".join(word))
    return " ".join(words)


def similarity(a, b):
    na, nb = normalize(a), normalize(b)
    return 1.0 if na == nb else JaroWinkler.similarity(na, nb, prefix_weight=0.1)


DEDUP_PAIRS = [
    ("", ""),
    ("", "x"),
    ("...", ""),            # only punctuation: normalises to ""
    ("x", "x"),
    ("a", "b"),
    ("ab", "ba"),
    ("MARTHA", "MARHTA"),    # Jaro-Winkler's textbook pairs
    ("DWAYNE", "DUANE"),
    ("DIXON", "DICKSONX"),
    ("Barack Obama", "Barak Obama"),
    ("Berlin", "berlin."),
    ("Paris", "Parsi"),
    ("New York City", "New York"),
    ("Angela Merkel", "Merkel"),
    ("abc", "xyz"),
    ("cheeseburger", "cheese fries"),
    ("U.S.A.", "u s a"),     # punctuation separates words
    ("U.S.A.", "USA"),
    ("a-b_c", "a b c"),
    ("O'Brien", "o'brien"),  # the apostrophe stays
    ("O'Brien", "OBrien"),
    ("  spaced \t out\n", "spaced out"),
    ("New\u00a0York", "new york"),   # no-break space is whitespace
    ("New\u3000York", "new york"),   # ideographic space too
    ("Zürich", "Zurich"),
    ("Zürich", "ZÜRICH"),
    ("café", "cafe\u0301"),          # NFC and NFD are different texts
    ("İstanbul", "istanbul"),        # İ lower-cases to i + U+0307
    ("ΟΔΟΣ", "οδος"),                # char-wise lower case: σ, not ς
    ("ΟΔΟΣ", "οδοσ"),
    ("東京", "東京都"),
    ("東京", "京都"),
    ("«Paris»", "Paris"),            # « » are not ASCII punctuation
    ("\U0001F600", "\U0001F600\U0001F600"),
    ("Berlin \U0001F1E9\U0001F1EA", "Berlin"),
    ("Jon", "John"),
    ("abcd", "abce"),
    ("abcdefgh", "abcdxxxx"),
    ("x" * 1000 + "a", "x" * 1000 + "b"),
    ("a" + "x" * 1000, "b" + "x" * 1000),
    ("The Quick Brown Fox", "the quick, brown fox!"),
]


def dedup_cases():
    return [{"a": a, "b": b, "normalised_a": normalize(a), "normalised_b": normalize(b), "similarity": similarity(a, b)}
            for a, b in DEDUP_PAIRS]


# ---------------------------------------------------------------------------------------------

FILES = {
    "hashing.json": {
        "description": "The bucketing hashes: h(a, b, seed) = XXH3_64bits_withSeed(UTF-8(a) ‖ 0x00 ‖ UTF-8(b), seed). "
                       "a is a flag name (rollout bucket) or a test id (variant point, slice score), b a unit id. "
                       "rollout_bucket = h(a, b, 0) mod 10000; variant_point = (h(a, b, 1) >> 11) × 2^-53 (an exact double); "
                       "slice_score = h(a, b, 2). xxh3_seed0/xxh3_seed1 are the raw hashes; key_bytes the key's length.",
        "source": "gen_vectors.py: Python xxhash (xxh3_64_intdigest), the README's formulas in Python integers and doubles",
        "cases": hashing_cases(),
    },
    "bucketing.json": {
        "description": "Variant choice: the unit's point is variant_point(test_id, unit); with weights w (champion first) "
                       "the variant is the first index i with w_i > 0 and point × Σw < w_1 + … + w_i, in IEEE doubles summed "
                       "left to right. Units are some plain ones plus, for every boundary between weighted variants, the "
                       "user-N (N < 100000) whose point falls just below and just above it, and the smallest and largest points.",
        "source": "gen_vectors.py: Python xxhash for the point, the README's rule in Python floats",
        "cases": bucketing_cases(),
    },
    "slices.json": {
        "description": "Mutually exclusive tests: the unit belongs to the test in `tests` with the highest "
                       "slice score h(test_id, unit, 2); ties (none occur here) go to the smaller test_id.",
        "source": "gen_vectors.py: Python xxhash, max over the tests in Python",
        "cases": slice_cases(),
    },
    "calibration.json": {
        "description": "Calibrated confidence = min(1, w1·base + w2·source_reliability + w3·contextual_consistency + "
                       "w4·temporal_coherence + w5·geographic_plausibility) with the default weights; factors and weights "
                       "in that order; uncapped is the sum before the cap.",
        "source": "gen_vectors.py: plain Python float arithmetic, products summed left to right",
        "cases": calibration_cases(),
    },
    "dedup.json": {
        "description": "Deduplication similarity of two entity texts: 1.0 when their normalised texts are equal, else "
                       "Jaro-Winkler (prefix scale 0.1, prefix at most 4, boost only when Jaro > 0.7) of the normalised texts. "
                       "Normalised: Unicode White_Space and ASCII punctuation except the apostrophe separate words, words "
                       "joined by one space, each character lower-cased on its own (no final sigma), no Unicode normalisation.",
        "source": "gen_vectors.py: normalisation in Python, rapidfuzz's JaroWinkler.similarity(prefix_weight=0.1)",
        "cases": dedup_cases(),
    },
}


def main():
    # The directory to write: this script's, or the one given (test_vectors.py writes a fresh
    # copy into a temporary directory and compares it with the committed files).
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    target.mkdir(parents=True, exist_ok=True)
    for name, content in FILES.items():
        path = target / name
        path.write_text(json.dumps(content, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print("wrote", path, len(content["cases"]), "cases")


if __name__ == "__main__":
    main()
