"""The subset of the GA4 `events_*` BigQuery schema the simulator writes, as an Arrow schema."""

import pyarrow as pa

_VALUE = pa.struct([("string_value", pa.string()), ("int_value", pa.int64()),
                    ("float_value", pa.float64()), ("double_value", pa.float64())])
_PARAMS = pa.list_(pa.struct([("key", pa.string()), ("value", _VALUE)]))
_CAMPAIGN = pa.struct([(n, pa.string()) for n in (
    "campaign_id", "campaign_name", "source", "medium", "term", "content", "source_platform",
    "creative_format", "marketing_tactic")])

GA4_ARROW_SCHEMA = pa.schema([
    ("event_date", pa.string()),
    ("event_timestamp", pa.int64()),
    ("event_name", pa.string()),
    ("event_params", _PARAMS),
    ("event_previous_timestamp", pa.int64()),
    ("event_value_in_usd", pa.float64()),
    ("event_bundle_sequence_id", pa.int64()),
    ("event_server_timestamp_offset", pa.int64()),
    ("user_id", pa.string()),
    ("user_pseudo_id", pa.string()),
    ("privacy_info", pa.struct([("analytics_storage", pa.string()), ("ads_storage", pa.string()),
                                ("uses_transient_token", pa.string())])),
    ("user_properties", pa.list_(pa.struct([("key", pa.string()), ("value", _VALUE)]))),
    ("user_first_touch_timestamp", pa.int64()),
    ("user_ltv", pa.struct([("revenue", pa.float64()), ("currency", pa.string())])),
    ("device", pa.struct([("category", pa.string()), ("operating_system", pa.string()), ("language", pa.string()),
                          ("web_info", pa.struct([("browser", pa.string()), ("browser_version", pa.string()),
                                                  ("hostname", pa.string())]))])),
    ("geo", pa.struct([(n, pa.string()) for n in ("continent", "sub_continent", "country", "region", "city",
                                                  "metro")])),
    ("traffic_source", pa.struct([("name", pa.string()), ("medium", pa.string()), ("source", pa.string())])),
    ("stream_id", pa.string()),
    ("platform", pa.string()),
    ("ecommerce", pa.struct([("total_item_quantity", pa.int64()), ("purchase_revenue_in_usd", pa.float64()),
                             ("purchase_revenue", pa.float64()), ("refund_value_in_usd", pa.float64()),
                             ("refund_value", pa.float64()), ("shipping_value_in_usd", pa.float64()),
                             ("shipping_value", pa.float64()), ("tax_value_in_usd", pa.float64()),
                             ("tax_value", pa.float64()), ("unique_items", pa.int64()),
                             ("transaction_id", pa.string())])),
    ("items", pa.list_(pa.struct([("item_id", pa.string()), ("item_name", pa.string()), ("price", pa.float64()),
                                  ("quantity", pa.int64()), ("item_revenue", pa.float64()),
                                  ("price_in_usd", pa.float64()), ("item_revenue_in_usd", pa.float64()),
                                  ("coupon", pa.string())]))),
    ("collected_traffic_source", pa.struct([("manual_campaign_name", pa.string()), ("manual_source", pa.string()),
                                            ("manual_medium", pa.string())])),
    ("is_active_user", pa.bool_()),
    ("session_traffic_source_last_click", pa.struct([("manual_campaign", _CAMPAIGN)])),
])

# Dotted paths of INT64 fields, which BigQuery's JSON export writes as strings.
INT64_PATHS = frozenset({
    "event_timestamp", "event_previous_timestamp", "event_bundle_sequence_id", "event_server_timestamp_offset",
    "user_first_touch_timestamp", "event_params.value.int_value", "user_properties.value.int_value",
    "ecommerce.total_item_quantity", "ecommerce.unique_items", "items.quantity",
})
