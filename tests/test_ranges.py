"""Range planning: touching ranges share a request, small gaps are read through within the over-read budget, huge
ranges are split; assembling gives back exactly each range's bytes."""

from solarforensics.sources.ranges import Span, fetch_spans, plan_spans


def test_touching_ranges_share_one_request_and_files_never_mix():
    spans = plan_spans([("a", 0, 10), ("a", 10, 20), ("b", 20, 30)], max_gap=0)
    assert spans == [Span("a", 0, 20, [(0, 10), (10, 20)]), Span("b", 20, 30, [(20, 30)])]


def test_gaps_are_read_through_smallest_first_within_the_overread_budget():
    ranges = [("a", 0, 100), ("a", 101, 200), ("a", 205, 300), ("a", 400, 500)]
    # 400 bytes needed, 2% budget = 8 bytes: the 1-byte gap and the 5-byte gap, not the 100-byte one
    spans = plan_spans(ranges, max_gap=1000, overread=0.02)
    assert [(s.start, s.end) for s in spans] == [(0, 300), (400, 500)]
    assert [(s.start, s.end) for s in plan_spans(ranges, max_gap=1000, overread=1.0)] == [(0, 500)]
    assert len(plan_spans(ranges, max_gap=0, overread=1.0)) == 4


def test_a_range_larger_than_max_span_is_split_into_parallel_requests():
    spans = plan_spans([("a", 3, 103)], max_span=30)
    assert [(s.start, s.end) for s in spans] == [(3, 33), (33, 63), (63, 93), (93, 103)]
    content = bytes(range(256))
    got = {}
    fetch_spans(spans, lambda f, s, e: content[s:e], lambda span, data: got.update({span.start: bytes(data)}), workers=4)
    assert b"".join(got[k] for k in sorted(got)) == content[3:103]
