"""The compliance checker says no to bad copy, with the right light and reason."""

from __future__ import annotations

import pytest

from flashcast.config import BrandRules, ChannelCopyLimits
from flashcast.records import SEGMENTS
from flashcast.stages.creatives import check_copy, make_creative, template_creatives

BRAND = BrandRules()
OK_BODY = "Fresh picks for the season. Terms apply."


@pytest.mark.parametrize(
    ("headline", "body", "channel", "light", "code"),
    [
        ("Spring picks", OK_BODY, "PPC", "green", None),
        ("Write to jane.doe@example.com", OK_BODY, "Email", "red", "pii_email"),
        ("Spring picks", "Call 555-123-4567 today. Terms apply.", "PPC", "red", "pii_phone"),
        ("Cheap shoes here", OK_BODY, "PPC", "red", "banned_word"),
        ("A headline that is over thirty chars", OK_BODY, "PPC", "red", "too_long"),
        ("Sixteen chars!!x", OK_BODY, "CTV", "red", "too_long"),
        ("Spring picks", "x" * 80 + " Terms apply.", "PPC", "red", "too_long"),
        ("Guaranteed fit", OK_BODY, "PPC", "amber", "risky_claim"),
        ("The best trainers", OK_BODY, "PPC", "amber", "risky_claim"),
        ("#1 running shop", OK_BODY, "PPC", "amber", "risky_claim"),
        ("Risk-free returns", OK_BODY, "PPC", "amber", "risky_claim"),
        ("Spring picks", "Fresh picks for the season.", "PPC", "amber", "no_disclaimer"),
        ("SPRING SALE NOW", OK_BODY, "PPC", "amber", "caps"),
        ("Spring picks!!", OK_BODY, "PPC", "amber", "punctuation"),
    ],
)
def test_checker_lights_and_reasons(headline: str, body: str, channel: str, light: str, code: str | None) -> None:
    result = check_copy(headline, body, channel=channel, brand=BRAND)
    assert result.light == light, result.reasons
    if code is None:
        assert result.reasons == ()
    else:
        assert code in {r.code for r in result.reasons}
        assert all(r.message for r in result.reasons)


def test_words_match_whole_words_only() -> None:
    assert check_copy("Bestow a gift", OK_BODY, channel="PPC", brand=BRAND).light == "green"
    assert check_copy("Cheapest? No.", OK_BODY, channel="PPC", brand=BRAND).light == "green"


def test_red_outranks_amber() -> None:
    result = check_copy("BEST DEAL EVER!!", "Mail me at a@b.com, cheap", channel="PPC", brand=BRAND)
    assert result.light == "red"
    assert {"risky_claim", "caps", "punctuation", "pii_email", "banned_word", "no_disclaimer"} <= {
        r.code for r in result.reasons}


def test_status_follows_the_light_and_a_person_approves_by_default() -> None:
    green = make_creative("Value Shopper", "PPC", "A", "Spring picks", OK_BODY, brand=BRAND)
    amber = make_creative("Value Shopper", "PPC", "A", "Best picks", OK_BODY, brand=BRAND)
    red = make_creative("Value Shopper", "PPC", "A", "Cheap picks", OK_BODY, brand=BRAND)
    assert (green.status, amber.status, red.status) == ("pending", "pending", "rejected")
    auto = make_creative("Value Shopper", "PPC", "A", "Spring picks", OK_BODY, brand=BRAND, auto_approve_green=True)
    assert auto.status == "approved"
    assert not BrandRules().auto_approve_green


def test_template_library_fits_every_channel() -> None:
    library = template_creatives(SEGMENTS, ("Display", "CTV", "PPC", "Email"), brand=BRAND)
    assert len(library) == len(SEGMENTS) * 4 * 2
    for creative in library:
        limits = BRAND.limits[creative.channel]
        assert len(creative.headline) <= limits.headline and len(creative.body) <= limits.body
        assert creative.light == "green", creative
        assert creative.body.endswith(BRAND.disclaimer)
    pairs = {(c.segment, c.channel): set() for c in library}
    for c in library:
        pairs[(c.segment, c.channel)].add(c.headline)
    assert all(len(h) == 2 for h in pairs.values()), "two different variants per segment and channel"
    for segment in SEGMENTS:  # each channel speaks its own way: no copy repeats across channels
        copies = [(c.headline, c.body) for c in library if c.segment == segment]
        assert len(copies) == len(set(copies)), segment
    assert len({c.headline for c in library}) == len(library)


def test_a_brand_the_templates_cannot_fit_gets_red_rejected_copy() -> None:
    brand = BrandRules(disclaimer="Offer valid for new customers only, see the full terms on our website.",
                       limits={"CTV": ChannelCopyLimits(headline=15, body=40)})
    library = template_creatives(("Speed Seeker",), ("CTV",), brand=brand)
    assert library and all(c.light == "red" and c.status == "rejected" for c in library)
    assert all("too_long" in {r.code for r in c.reasons} for c in library)


def test_banned_words_from_the_brand_config_are_used() -> None:
    brand = BrandRules(banned_words=("sneaker",))
    assert check_copy("City sneaker", OK_BODY, channel="PPC", brand=brand).light == "red"
    assert check_copy("City sneaker", OK_BODY, channel="PPC", brand=BRAND).light == "green"


def test_no_copy_is_written_for_a_segment_without_users() -> None:
    """k-means names its clusters after some of the segments only: copy for an empty one would wait
    for a person's approval and never run (the payload buys no empty audience)."""
    from datetime import UTC, datetime

    import duckdb

    from flashcast.config import Settings
    from flashcast.records import RunContext, Segmentation, SegmentProfile
    from flashcast.stages import creatives

    sizes = dict.fromkeys(SEGMENTS, 0) | {"Brand Loyalist": 40, "Browser": 60}
    profiles = tuple(SegmentProfile(s, n, n / 100, 10.0, 2.0, 0.5, 50.0, 3.0, 60.0) for s, n in sizes.items())
    segmentation = Segmentation("user_segments", profiles, {}, {}, method="kmeans")
    with duckdb.connect() as con:
        library = creatives.run(con, segments=segmentation, settings=Settings(), llm=None,
                                context=RunContext("run-1", datetime.now(UTC), "key-1"))
        assert con.execute("SELECT count(DISTINCT segment) FROM creatives").fetchall() == [(2,)]
    assert {c.segment for c in library.creatives} == {"Brand Loyalist", "Browser"}
    assert len(library.creatives) == 2 * 2 * len(Settings().channels.paid_channels)
