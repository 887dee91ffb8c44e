"""The words the config and the policy packages share, below both.

The config (``backhaul.config``) validates names and values that the policy packages
(``backhaul.balance``) act on: balancing policy names, maglev table sizes, HTTP status
ranges of health checks. Their definitions live here, so that neither package imports the
other: the config stays pydantic and the policy stays free of it. Plain Python, importing
nothing of backhaul's.

    balancing        Policy, POLICIES, HASH_POLICIES, MAX_MAGLEV_TABLE, is_prime
    status_ranges    parse_status_ranges, format_status_ranges, StatusRangeError
"""
