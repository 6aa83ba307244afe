"""The local edge: a Varnish configuration (VCL 4.1, Debian's `varnish` 7.x) generated from
the cache-rules table, so the gateway runs behind a real HTTP cache the way CloudFront fronts
the functions in AWS (`edgemart edge-vcl`).

Per rule of `edgemart.cache.CACHE_RULES`, as the template's CloudFront policies do:
- only GET/HEAD of the rule's routes are looked up; everything else passes to the gateway;
- the cache key is the path plus the rule's query parameters (all of them sorted, a list of
  them, or none, in which case the query string is not forwarded either), plus the
  Authorization header where the rule keys on it (otherwise the header is dropped);
- the object lives for the response's `s-maxage` (Varnish reads it from Cache-Control, less
  any `Age`); once expired it is served for `stale-while-revalidate` while one background
  fetch refreshes it (`req.grace`), and for `stale-if-error` while the gateway fails its
  health probe; a failed revalidation (5xx) keeps the stale copy;
- 5xx and `no-store`/`private` responses are never stored;
- pages showing stock are kept fresh for at most `edge_ttl` (edgemart.edgepurge), as the
  template's cache policies cap them.

Tenants (decision 0043): the cache key holds the host (lower-case, without its port), so two
marketplaces' `/products/x` are never one object, and the gateway is told the host the edge
keyed on (`X-Forwarded-Host` is set to it; a client's own `X-Forwarded-Host` or
`CloudFront-Viewer-Host` never reaches the gateway), so it cannot resolve another tenant than
the one the object is stored for.

Purging (edgemart.edgepurge): each stored page keeps the `X-Edgemart-Tags` it was sent with
and the URL it is stored under (`X-Edge-Url`, scoped by the page's `X-Edgemart-Tenant` the
way `edgemart.tenantscope.scoped` scopes a name, so a ban by URL reaches one tenant's pages);
all three are stripped before delivery. A `BAN` carries a ban expression on the tags or the
URL in `X-Edgemart-Ban` (nothing else is accepted); a `PURGE` drops the one URL it names on
the host it names (its anonymous copy, or the copy for the Authorization header it carries).
Both are refused with 403 unless the client is in the `edge_purgers` ACL: loopback, plus the
addresses given to `edgemart edge-vcl --purger`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from edgemart.cache import CACHE_RULES, TAGS_HEADER, TENANT_HEADER, CacheRule
from edgemart.edgepurge import BAN_HEADER, URL_HEADER, edge_ttl
from edgemart.settings import IPNetwork
from edgemart.tenantscope import SCOPE_END, SCOPE_MARK

PROBE_PATH = "/health/live"
LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.1/32"),
    ipaddress.ip_network("::1/128"),
)
"""Who may always BAN and PURGE: this host (the gateway sends its bans from here)."""


def route_regex(route: str) -> str:
    """`GET /stores/{slug}` -> a VCL regex for the path with any query string."""
    path = route.split(" ", 1)[1]
    pattern = re.sub(r"\\\{\w+\\\}", "[^/?]+", re.escape(path))
    return f"^{pattern}(\\?.*)?$"


def _query_rule(rule: CacheRule) -> str:
    if rule.query_params is None:
        return "        set req.url = std.querysort(req.url);"
    if not rule.query_params:
        return '        set req.url = regsub(req.url, "\\?.*$", "");'
    keep = "|".join(re.escape(name) for name in sorted(rule.query_params))
    return "\n".join(
        [
            f'        set req.url = regsuball(req.url, "(?<=[?&])(?!(?:{keep})=)[^&]*(&|$)", "");',
            '        set req.url = regsub(req.url, "[?&]+$", "");',
            "        set req.url = std.querysort(req.url);",
        ]
    )


def _recv_block(rule: CacheRule) -> str:
    condition = " || ".join(f'req.url ~ "{route_regex(route)}"' for route in rule.routes)
    keyed = "Authorization" in rule.key_headers
    lines = [
        f"    if ({condition}) {{",
        f'        set req.http.X-Edge-Rule = "{rule.name}";',
        _query_rule(rule),
        "        if (std.healthy(req.backend_hint)) {",
        f"            set req.grace = {rule.stale_while_revalidate}s;",
        "        }",
    ]
    if not keyed:
        lines.append("        unset req.http.Authorization;")
    lines += [
        "        unset req.http.Cookie;",
        '        if (req.method == "PURGE") {',
        "            return (purge);",
        "        }",
        "        return (hash);",
        "    }",
    ]
    return "\n".join(lines)


def _grace_block(rules: Iterable[CacheRule]) -> str:
    lines = []
    for rule in rules:
        lines += [
            f'    if (bereq.http.X-Edge-Rule == "{rule.name}") {{',
            # Kept past its TTL for the longer of the two windows; req.grace narrows it to
            # stale-while-revalidate while the gateway is healthy.
            f"        set beresp.grace = {max(rule.stale_while_revalidate, rule.stale_if_error)}s;",
        ]
        if edge_ttl(rule) < rule.s_maxage:
            lines += [
                f"        if (beresp.ttl > {edge_ttl(rule)}s) {{",
                f"            set beresp.ttl = {edge_ttl(rule)}s;  # it shows stock",
                "        }",
            ]
        lines.append("    }")
    return "\n".join(lines)


def acl_entry(network: IPNetwork) -> str:
    """`"10.0.0.0"/8;`, or `"127.0.0.1";` for a single address."""
    if network.prefixlen == network.max_prefixlen:
        return f'"{network.network_address}";'
    return f'"{network.network_address}"/{network.prefixlen};'


def _acl(purgers: Sequence[IPNetwork]) -> str:
    networks = list(dict.fromkeys([*LOOPBACK, *purgers]))
    return "\n".join(f"    {acl_entry(network)}" for network in networks)


BAN_PATTERN = rf"^obj\.http\.({re.escape(TAGS_HEADER)}|{re.escape(URL_HEADER)}) ~ [^ ]+$"
"""The only bans the edge takes: one regular expression on the stored tags or URL (`obj.*`
only, which Varnish's ban lurker can apply in the background)."""


SCOPED_URL = f'"{SCOPE_MARK}" + beresp.http.{TENANT_HEADER} + "{SCOPE_END}" + bereq.url'
"""The URL a tenant's page is stored under: `edgemart.tenantscope.scoped(tenant, url)`."""


def render_vcl(backend_host: str, backend_port: int, *, purgers: Sequence[IPNetwork] = ()) -> str:
    """The local edge's VCL for a gateway at `backend_host:backend_port`; `purgers` may BAN
    and PURGE besides loopback."""
    rules = list(CACHE_RULES.values())
    recv = "\n".join(_recv_block(rule) for rule in rules)
    return f"""vcl 4.1;
# Generated by `edgemart edge-vcl` from edgemart/cache.py CACHE_RULES. Do not edit.

import std;

acl edge_purgers {{
{_acl(purgers)}
}}

backend gateway {{
    .host = "{backend_host}";
    .port = "{backend_port}";
    .connect_timeout = 1s;
    .first_byte_timeout = 10s;
    .probe = {{
        .url = "{PROBE_PATH}";
        .interval = 1s;
        .timeout = 500ms;
        .window = 3;
        .threshold = 2;
        .initial = 2;
    }}
}}

sub edge_ban {{
    if (req.http.{BAN_HEADER} !~ {{"{BAN_PATTERN}"}}) {{
        return (synth(400, "{BAN_HEADER}: a regex on obj.http.{TAGS_HEADER} or {URL_HEADER}"));
    }}
    if (std.ban(req.http.{BAN_HEADER})) {{
        return (synth(200, "Banned"));
    }}
    return (synth(400, std.ban_error()));
}}

sub vcl_recv {{
    unset req.http.X-Edge-Rule;
    # The gateway resolves the tenant from the host this edge keys on, nothing else.
    unset req.http.CloudFront-Viewer-Host;
    if (req.http.host) {{
        set req.http.X-Forwarded-Host = req.http.host;
    }} else {{
        unset req.http.X-Forwarded-Host;
    }}
    if (req.method == "BAN" || req.method == "PURGE") {{
        if (!client.ip ~ edge_purgers) {{
            return (synth(403, "Forbidden"));
        }}
        if (req.method == "BAN") {{
            call edge_ban;
        }}
    }} elsif (req.method != "GET" && req.method != "HEAD") {{
        return (pass);
    }}
{recv}
    if (req.method == "PURGE") {{
        return (synth(404, "Not cached here"));
    }}
    return (pass);
}}

sub vcl_hash {{
    hash_data(req.url);
    if (req.http.host) {{
        hash_data(std.tolower(regsub(req.http.host, ":[0-9]+$", "")));
    }} else {{
        hash_data(server.ip);
    }}
    if (req.http.Authorization) {{
        hash_data(req.http.Authorization);
    }}
    return (lookup);
}}

sub vcl_backend_response {{
    if (!bereq.http.X-Edge-Rule) {{
        return (deliver);  # passed through: never stored
    }}
    if (beresp.status >= 500 && bereq.is_bgfetch) {{
        return (abandon);  # a failed revalidation keeps the stale copy
    }}
    if (beresp.status >= 500 || beresp.http.Cache-Control ~ "(no-store|private)") {{
        set beresp.uncacheable = true;
        set beresp.ttl = 1s;
        return (deliver);
    }}
    set beresp.http.{URL_HEADER} = bereq.url;  # what a ban by URL matches
    if (beresp.http.{TENANT_HEADER} ~ "^[0-9a-f-]{{36}}$") {{
        set beresp.http.{URL_HEADER} = {SCOPED_URL};
    }}
{_grace_block(rules)}
    # Stored even when already past its s-maxage (an aged upstream copy): grace decides.
    return (deliver);
}}

sub vcl_deliver {{
    unset resp.http.{TAGS_HEADER};
    unset resp.http.{TENANT_HEADER};
    unset resp.http.{URL_HEADER};
    if (obj.hits > 0) {{
        set resp.http.X-Cache = "HIT";
    }} else {{
        set resp.http.X-Cache = "MISS";
    }}
}}
"""
