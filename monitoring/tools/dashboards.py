#!/usr/bin/env python3
"""Generates duet's Grafana dashboards (monitoring/grafana/dashboards/*.json).

The JSON files are committed (Grafana and the k8s ConfigMap read them); this script is
their source. Edit here, run `monitoring/tools/dashboards.py`, commit both.
`--check` exits 1 when a committed file differs from what this script generates
(scripts/check-ops runs it).

Every metric name the dashboards use comes from the table `M` below, so that renaming
a metric in the code is one edit here; scripts/check-ops verifies that every name is
exported by a running duet.
"""

import json
import os
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "grafana", "dashboards")

# Metric names, as the crates export them (`/metrics`).
M = {
    # build
    "build_info": "duet_build_info",
    # signaling (signaling/src/metrics.rs)
    "sessions": "duet_signaling_sessions_created_total",
    "online": "duet_signaling_online",
    "waiting": "duet_signaling_waiting",
    "matches": "duet_signaling_matches_total",
    "ttm": "duet_signaling_time_to_match_seconds",
    "chat": "duet_signaling_chat_messages_total",
    "reports": "duet_signaling_reports_total",
    "rate_limited": "duet_signaling_rate_limited_total",
    "bad_input": "duet_signaling_bad_input_total",
    "sfu_errors": "duet_signaling_sfu_errors_total",
    # SFU (sfu/src/metrics.rs)
    "participants": "duet_sfu_participants",
    # recording rule in monitoring/alerts/duet.yml (the node's admission limit)
    "capacity": "duet:sfu_capacity:participants",
    "links": "duet_sfu_links",
    "packets_in": "duet_sfu_packets_in_total",
    "packets_out": "duet_sfu_packets_out_total",
    "bytes_in": "duet_sfu_bytes_in_total",
    "bytes_out": "duet_sfu_bytes_out_total",
    "rtp_forwarded": "duet_sfu_rtp_forwarded_total",
    "sfu_drops": "duet_sfu_drops_total",
    "keyframe_requests": "duet_sfu_keyframe_requests_total",
    "snapshot_age": "duet_sfu_snapshot_oldest_age_seconds",
    "snapshot_served": "duet_sfu_snapshot_served_age_seconds",
    "handoff_in": "duet_sfu_turn_handoff_in_total",
    "handoff_out": "duet_sfu_turn_handoff_out_total",
    "ws_sessions": "duet_sfu_ws_sessions",
    # report queue, from postgres_exporter (monitoring/postgres-exporter-queries.yml)
    "reports_open": "pg_duet_report_queue_open",
    "report_oldest": "pg_duet_report_queue_oldest_age_seconds",
    "report_oldest_severe": "pg_duet_report_queue_oldest_severe_age_seconds",
    # TURN (turn-relay/src/metrics.rs)
    "allocations": "duet_turn_allocations",
    "permissions": "duet_turn_permissions",
    "channels": "duet_turn_channels",
    "relayed_packets": "duet_turn_relayed_packets_total",
    "relayed_bytes": "duet_turn_relayed_bytes_total",
    "auth_failures": "duet_turn_auth_failures_total",
    "policy_denials": "duet_turn_policy_denials_total",
    "quota_hits": "duet_turn_quota_hits_total",
    "turn_dropped": "duet_turn_dropped_total",
    "turn_requests": "duet_turn_requests_total",
    "screen_samples": "duet_screen_samples_total",
    "screen_flags": "duet_screen_flags_total",
    "screen_failures": "duet_screen_failures_total",
    "screen_inference": "duet_screen_inference_seconds",
    "screen_queue_age": "duet_screen_queue_age_seconds",
    "screen_lag": "duet_screen_lag_seconds",
    "screen_missed": "duet_screen_missed_slots_total",
    "screen_calls": "duet_screen_calls",
    "screening_results": "duet_signaling_screening_results_total",
}

R = '{region=~"$region"}'
NOT_STALE = 'reason!="stale_nonce"'
TO_PEER = 'direction="to_peer"'
PERIODIC = 'cause="periodic"'
REPORT_KIND = 'kind="report"'
DS = {"type": "prometheus", "uid": "${datasource}"}


def sel(extra=""):
    inner = 'region=~"$region"' + ("," + extra if extra else "")
    return "{" + inner + "}"


class Board:
    def __init__(self, uid, title, description, tags):
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.panels, self.x, self.y, self.row_h, self.next_id = [], 0, 0, 0, 1

    def row(self, title):
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        self.panels.append({"id": self._id(), "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def _place(self, w, h):
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def _targets(self, queries, fmt=None):
        out = []
        for i, q in enumerate(queries):
            expr, legend = q if isinstance(q, tuple) else (q, "")
            t = {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend or "__auto"}
            if fmt:
                t["format"] = fmt
            out.append(t)
        return out

    def ts(self, title, queries, unit="short", desc="", w=12, h=8, stack=False, minimum=None):
        defaults = {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10,
                                             "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                                             "showPoints": "never"}}
        if minimum is not None:
            defaults["min"] = minimum
        self.panels.append({
            "id": self._id(), "type": "timeseries", "title": title, "description": desc,
            "gridPos": self._place(w, h), "datasource": DS, "targets": self._targets(queries),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}})

    def stat(self, title, expr, unit="short", desc="", w=4, h=4, thresholds=None, decimals=None):
        steps = [{"color": "green", "value": None}]
        for value, color in thresholds or []:
            steps.append({"color": color, "value": value})
        defaults = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}
        if decimals is not None:
            defaults["decimals"] = decimals
        self.panels.append({
            "id": self._id(), "type": "stat", "title": title, "description": desc,
            "gridPos": self._place(w, h), "datasource": DS, "targets": self._targets([expr]),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
                        "textMode": "auto", "orientation": "auto"}})

    def heatmap(self, title, expr, desc="", w=12, h=8):
        self.panels.append({
            "id": self._id(), "type": "heatmap", "title": title, "description": desc,
            "gridPos": self._place(w, h), "datasource": DS,
            "targets": [{"refId": "A", "datasource": DS, "expr": expr, "legendFormat": "{{le}}",
                         "format": "heatmap"}],
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1,
                        "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                        "tooltip": {"show": True, "yHistogram": True}}})

    def table(self, title, expr, desc="", w=24, h=6):
        self.panels.append({
            "id": self._id(), "type": "table", "title": title, "description": desc,
            "gridPos": self._place(w, h), "datasource": DS,
            "targets": [{"refId": "A", "datasource": DS, "expr": expr, "format": "table", "instant": True}],
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {"showHeader": True},
            "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}]})

    def json(self):
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": ["duet"] + self.tags,
            "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1, "timezone": "",
            "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
            "annotations": {"list": []},
            "links": [{"title": "duet dashboards", "type": "dashboards", "tags": ["duet"], "asDropdown": True}],
            "templating": {"list": [
                {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                 "current": {}, "hide": 0, "refresh": 1},
                {"name": "region", "label": "Region", "type": "query", "datasource": DS,
                 "query": {"query": f"label_values({M['build_info']}, region)", "refId": "region"},
                 "definition": f"label_values({M['build_info']}, region)",
                 "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2,
                 "sort": 1, "hide": 0}]},
            "panels": self.panels,
        }


def rate(name, by="", extra="", window="$__rate_interval"):
    s = f"sum{(' by (' + by + ')') if by else ''}(rate({name}{sel(extra)}[{window}]))"
    return s


def overview():
    b = Board("duet-overview", "duet / Overview",
              "Is duet up, how many people use it, and is there room for more. One row per plane.", ["overview"])
    b.row("Now")
    b.stat("Visitors online", f"sum({M['online']}{R})", desc="Open visitor WebSockets, all signaling replicas.")
    b.stat("Waiting for a partner", f"sum({M['waiting']}{R})")
    b.stat("Matches / min", f"60 * {rate(M['matches'])}", decimals=1)
    b.stat("In calls (SFU participants)", f"sum({M['participants']}{R})")
    b.stat("SFU capacity used", f"sum({M['participants']}{R}) / sum({M['capacity']}{R})", unit="percentunit",
           thresholds=[(0.7, "orange"), (0.9, "red")], desc="Participants over the capacity of all nodes.")
    b.stat("SFU nodes up", f'sum(up{{job="sfu",region=~"$region"}})', desc="Scrape targets of SFU nodes that answer.")
    b.row("Traffic")
    b.ts("Visitors online and waiting", [
        (f"sum by (region)({M['online']}{R})", "online {{region}}"),
        (f"sum by (mode)({M['waiting']}{R})", "waiting {{mode}}")])
    b.ts("Sessions and matches per second", [
        (rate(M["sessions"]), "sessions"), (rate(M["matches"]), "matches")], unit="reqps")
    b.row("Capacity")
    b.ts("SFU participants vs capacity, per region", [
        (f"sum by (region)({M['participants']}{R})", "participants {{region}}"),
        (f"sum by (region)({M['capacity']}{R})", "capacity {{region}}")],
        desc="A region whose participants reach its capacity sends visitors to fallback regions.")
    b.ts("Media bit rate through the SFUs", [
        (f"8 * {rate(M['bytes_in'])}", "in"), (f"8 * {rate(M['bytes_out'])}", "out")], unit="bps")
    b.row("Health")
    b.ts("Targets up", [('sum by (job)(up{region=~"$region"})', "{{job}}")], minimum=0)
    b.ts("Errors", [
        (rate(M["sfu_errors"]), "signaling → SFU call failures"),
        (rate(M["bad_input"]), "bad client input"),
        (rate(M["auth_failures"], "", NOT_STALE), "TURN auth failures")], unit="reqps")
    b.table("Running versions", f"count by (version, role, region)({M['build_info']}{R})")
    return b


def media():
    b = Board("duet-media", "duet / Media plane",
              "SFU nodes and their TURN relays: load, packets, drops, keyframes, snapshots, relay use.",
              ["media", "sfu", "turn"])
    b.row("SFU load")
    b.ts("Participants per node", [(f"sum by (pod, instance)({M['participants']}{R})", "{{pod}}")])
    b.ts("Links (paired participants) per node", [(f"sum by (pod, instance)({M['links']}{R})", "{{pod}}")])
    b.ts("SFU nodes up per region", [('sum by (region)(up{job="sfu",region=~"$region"})', "{{region}}")], minimum=0,
         desc="Scrape targets that answer. A draining node stays up until its calls end.")
    b.ts("Capacity headroom per region (free participant slots)", [
        (f"sum by (region)({M['capacity']}{R} - {M['participants']}{R})", "{{region}}")], minimum=0,
         desc="Capacity per node is the recording rule duet:sfu_capacity:participants (= DUET_MAX_PARTICIPANTS).")
    b.row("SFU packets")
    b.ts("Datagrams per second", [
        (rate(M["packets_in"]), "in"), (rate(M["packets_out"]), "out"),
        (rate(M["rtp_forwarded"]), "RTP forwarded")], unit="pps",
         desc="In and out count UDP and TURN hand-off datagrams; RTP forwarded is what reached a subscriber.")
    b.ts("Bit rate", [(f"8 * {rate(M['bytes_in'])}", "in"), (f"8 * {rate(M['bytes_out'])}", "out")], unit="bps")
    b.ts("Drops by reason", [(rate(M["sfu_drops"], "reason"), "{{reason}}")], unit="pps",
         desc="waiting_keyframe and not_current_source are normal right after a link (Next); "
              "write_failed and handoff_full mean an overloaded node.")
    b.ts("Keyframe requests sent, by cause", [(rate(M["keyframe_requests"], "cause"), "{{cause}}")], unit="reqps",
         desc="switch: a new link (Next); subscriber: loss on the receiving side; periodic: snapshot refresh.")
    b.ts("Oldest snapshot per node (moderation tap)", [
        (f"max by (pod, instance)({M['snapshot_age']}{R})", "{{pod}}")], unit="s",
         desc="Age of the oldest latest-keyframe among connected video publishers; grows when keyframes stop.")
    b.ts("SFU WebSocket sessions per node", [(f"sum by (pod, instance)({M['ws_sessions']}{R})", "{{pod}}")])
    b.row("TURN relay")
    b.ts("Allocations, permissions, channels", [
        (f"sum({M['allocations']}{R})", "allocations"),
        (f"sum({M['permissions']}{R})", "permissions"),
        (f"sum({M['channels']}{R})", "channels")])
    b.ts("Relayed packets per second", [(rate(M["relayed_packets"], "direction"), "{{direction}}")], unit="pps")
    b.ts("Relayed bit rate", [(f"8 * {rate(M['relayed_bytes'], 'direction')}", "{{direction}}")], unit="bps")
    b.ts("TURN requests by method", [(rate(M["turn_requests"], "method"), "{{method}}")], unit="reqps")
    b.ts("Auth failures by reason", [(rate(M["auth_failures"], "reason"), "{{reason}}")], unit="reqps",
         desc="stale_nonce is normal (nonce expiry); bad_integrity after a rotation means a secret mismatch.")
    b.ts("Policy denials and quota hits", [
        (rate(M["policy_denials"]), "peer denied by policy"),
        (rate(M["quota_hits"], "quota"), "quota {{quota}}")], unit="reqps",
         desc="Policy denials: someone tried to relay to an address duet does not serve (open-relay probing).")
    b.ts("TURN hand-off (in-process relay <-> SFU)", [
        (rate(M["handoff_in"]), "relay -> SFU"), (rate(M["handoff_out"]), "SFU -> relay")], unit="pps",
         desc="Datagrams that reach the SFU through its TURN relay without touching the kernel.")
    b.ts("TURN datagrams dropped by reason", [(rate(M["turn_dropped"], "reason"), "{{reason}}")], unit="pps")
    b.ts("Share of media datagrams through TURN", [
        (f"{rate(M['handoff_in'])} / {rate(M['packets_in'])}", "TURN share of inbound datagrams")],
        unit="percentunit", desc="Visitors whose network forces a relay (UDP blocked, TCP/TLS only).")
    return b


def matching():
    b = Board("duet-matching", "duet / Matching",
              "Signaling: sessions, queue, time to match, chat, rate limits.", ["matching", "signaling"])
    b.row("Time to match")
    b.ts("Time to match (p50, p95, p99)", [
        (f"histogram_quantile({q}, sum by (le)(rate({M['ttm']}_bucket{R}[$__rate_interval])))", f"p{int(float(q) * 100)}")
        for q in ("0.5", "0.95", "0.99")], unit="s",
        desc="From join to matched. Interests widen to everyone after DUET_WIDEN_AFTER_SECS.")
    b.heatmap("Time to match distribution", f"sum by (le)(increase({M['ttm']}_bucket{R}[$__interval]))")
    b.ts("Average time to match", [
        (f"sum(rate({M['ttm']}_sum{R}[$__rate_interval])) / sum(rate({M['ttm']}_count{R}[$__rate_interval]))",
         "mean")], unit="s")
    b.ts("Waiting per mode", [(f"sum by (mode)({M['waiting']}{R})", "{{mode}}")])
    b.row("Flow")
    b.ts("Sessions created / s", [(rate(M["sessions"], "region"), "{{region}}")], unit="reqps")
    b.ts("Matches / s", [(rate(M["matches"], "region"), "{{region}}")], unit="reqps")
    b.ts("Visitors online per replica", [(f"sum by (pod, instance)({M['online']}{R})", "{{pod}}")],
         desc="What the signaling HPA scales on (duet_signaling_online per pod).")
    b.ts("Chat messages / s", [(rate(M["chat"]), "chat")], unit="reqps")
    b.row("Refusals and errors")
    b.ts("Rate-limited requests by kind", [(rate(M["rate_limited"], "kind"), "{{kind}}")], unit="reqps")
    b.ts("Bad client input by kind", [(rate(M["bad_input"], "kind"), "{{kind}}")], unit="reqps")
    b.ts("Failed calls to SFU internal API", [(rate(M["sfu_errors"]), "errors")], unit="reqps")
    return b


def moderation():
    b = Board("duet-moderation", "duet / Moderation",
              "Reports, their rate relative to pairings, and what keeps the snapshot wall fresh.", ["moderation"])
    b.row("Report queue")
    b.stat("Open reports", f"sum({M['reports_open']})", decimals=0, thresholds=[(20, "orange"), (100, "red")],
           desc="Undecided reports (from the database, via postgres_exporter).")
    b.stat("Oldest open report", f"max({M['report_oldest']})", unit="s", thresholds=[(1800, "orange"), (3600, "red")])
    b.stat("Oldest open minor/violence report", f"max({M['report_oldest_severe']})", unit="s",
           thresholds=[(300, "orange"), (900, "red")])
    b.stat("Reports (last 24 h)", f"sum(increase({M['reports']}{R}[24h]))", decimals=0)
    b.stat("Reports per 1,000 pairings (24 h)",
           f"1000 * sum(increase({M['reports']}{R}[24h])) / sum(increase({M['matches']}{R}[24h]))", decimals=1)
    b.stat("Report requests rate-limited (24 h)",
           f'sum(increase({M["rate_limited"]}{sel(REPORT_KIND)}[24h]))', decimals=0)
    b.stat("Visitors online", f"sum({M['online']}{R})")
    b.ts("Open reports and the age of the oldest", [
        (f"sum({M['reports_open']})", "open reports"),
        (f"max({M['report_oldest']}) / 60", "oldest (minutes)"),
        (f"max({M['report_oldest_severe']}) / 60", "oldest minor/violence (minutes)")], w=12)
    b.ts("Reports per hour", [(f"3600 * {rate(M['reports'], 'region')}", "{{region}}")], w=12)
    b.ts("Reports per 1,000 pairings", [
        (f"1000 * {rate(M['reports'], '', '', '1h')} / {rate(M['matches'], '', '', '1h')}", "reports / 1k pairings")],
        w=12, desc="A jump means an abuse wave (or a broken page making people report).")
    b.row("Snapshot wall")
    b.ts("Age of snapshots served to moderators", [
        (f"histogram_quantile({q}, sum by (le)(rate({M['snapshot_served']}_bucket{R}[$__rate_interval])))",
         f"p{int(float(q) * 100)}") for q in ("0.5", "0.95")], unit="s",
         desc="Old snapshots on the wall: keyframes not arriving (loss, or periodic keyframe requests off).")
    b.ts("Oldest snapshot per node", [
        (f"max by (pod, instance)({M['snapshot_age']}{R})", "{{pod}}")], unit="s")
    b.ts("Periodic keyframe requests / s (snapshot refresh)", [
        (rate(M["keyframe_requests"], "", PERIODIC), "periodic")], unit="reqps")
    b.ts("Calls in progress (links)", [(f"sum by (region)({M['links']}{R})", "{{region}}")])
    b.ts("Chat messages / s", [(rate(M["chat"]), "chat")], unit="reqps")
    b.row("Automatic screening")
    b.ts("Snapshots screened / s, by highest level", [(rate(M["screen_samples"], "outcome"), "{{outcome}}")],
         unit="reqps", desc="clear: below review; review: flagged (wall first); high: automatic report too.")
    b.ts("Flags / h, by category", [(f"3600 * {rate(M['screen_flags'], 'category, level')}", "{{category}} {{level}}")])
    b.ts("Inference time", [
        (f"histogram_quantile({q}, sum by (le)(rate({M['screen_inference']}_bucket{R}[$__rate_interval])))",
         f"p{int(float(q) * 100)}") for q in ("0.5", "0.99")], unit="s")
    b.ts("Queue age and lag", [
        (f"histogram_quantile(0.95, sum by (le)(rate({M['screen_queue_age']}_bucket{R}[$__rate_interval])))",
         "queue age p95"),
        (f"max({M['screen_lag']}{R})", "oldest due sample not taken")], unit="s",
         desc="Growing: screeners are behind (DuetScreeningBehind).")
    b.ts("Failures / s, by kind", [(rate(M["screen_failures"], "kind"), "{{kind}}"),
                                   (rate(M["screen_missed"]), "skipped slots")], unit="reqps")
    b.ts("Calls on the schedule, and what signaling did", [
        (f"sum({M['screen_calls']}{R})", "calls screened"),
        (f"60 * {rate(M['screening_results'], 'outcome')}", "results/min {{outcome}}")])
    return b


BOARDS = {"overview.json": overview, "media-plane.json": media, "matching.json": matching,
          "moderation.json": moderation}


def render():
    return {name: json.dumps(fn().json(), indent=2) + "\n" for name, fn in BOARDS.items()}


def main(argv):
    check = "--check" in argv
    stale = []
    for name, text in render().items():
        path = os.path.normpath(os.path.join(OUT, name))
        old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if old != text:
            stale.append(path)
            if not check:
                os.makedirs(OUT, exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
    for s in stale:
        print(("out of date: " if check else "wrote ") + os.path.relpath(s))
    return 1 if (check and stale) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
