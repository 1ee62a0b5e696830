import pytest

from voxray.data.alignments import (TextGridError, parse_textgrid, phone_tier,
                                    phones_and_durations)

LONG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 1.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 1.5
        intervals: size = 1
        intervals [1]:
            xmin = 0
            xmax = 1.5
            text = "hi there"
    item [2]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 1.5
        intervals: size = 6
        intervals [1]:
            xmin = 0
            xmax = 0.2
            text = ""
        intervals [2]:
            xmin = 0.2
            xmax = 0.4
            text = "HH"
        intervals [3]:
            xmin = 0.4
            xmax = 0.61
            text = "AY1"
        intervals [4]:
            xmin = 0.61
            xmax = 0.75
            text = "sp"
        intervals [5]:
            xmin = 0.75
            xmax = 1.33
            text = "DH"
        intervals [6]:
            xmin = 1.33
            xmax = 1.5
            text = "sil"
'''

SHORT = '''File type = "ooTextFile"
Object class = "TextGrid"

0
1.5
<exists>
2
"IntervalTier"
"words"
0
1.5
1
0
1.5
"hi there"
"IntervalTier"
"phones"
0
1.5
6
0
0.2
""
0.2
0.4
"HH"
0.4
0.61
"AY1"
0.61
0.75
"sp"
0.75
1.33
"DH"
1.33
1.5
"sil"
'''


def test_long_and_short_formats_agree():
    long, short = parse_textgrid(LONG), parse_textgrid(SHORT)
    assert long == short
    assert [iv.label for iv in phone_tier(long)] == ["", "HH", "AY1", "sp", "DH", "sil"]


def test_durations_sum_exactly_and_drop_edge_silence():
    phones = phone_tier(parse_textgrid(LONG))
    frame = 256 / 22050
    # The audio was trimmed at 0.18 s and is 100 frames long.
    tokens, durations = phones_and_durations(phones, 0.18, 100, frame)
    assert tokens == ["HH", "AY1", "sp", "DH"]
    assert sum(durations) == 100
    assert all(d >= 0 for d in durations)
    # "AY1" spans 0.21 s = 18.1 frames; cumulative rounding keeps it within a frame.
    assert abs(durations[1] - 0.21 / frame) <= 1


def test_bad_textgrids():
    with pytest.raises(TextGridError, match="not a Praat TextGrid"):
        parse_textgrid("hello")
    with pytest.raises(TextGridError, match="truncated"):
        parse_textgrid(SHORT[: SHORT.index('"AY1"')])
    with pytest.raises(TextGridError, match="no phone tier"):
        phone_tier({"words": []})
    silent = parse_textgrid(SHORT.replace('"HH"', '""').replace('"AY1"', '""').replace('"DH"', '""'))
    with pytest.raises(TextGridError, match="no spoken interval"):
        phones_and_durations(phone_tier(silent), 0, 10, 0.01)
