//! One visit, one trace: the W3C Trace Context (`traceparent`) that ties the
//! spans of a visit together across signaling replicas and SFU nodes.
//!
//! A [`TraceParent`] travels in the `traceparent` header of every internal
//! HTTP call (signaling -> SFU internal API), in the JSON of each SFU event
//! (`/internal/v1/events`), in the visit's session and SFU tokens (so the
//! signaling WebSocket on any replica and the SFU WebSocket join the trace
//! the session began) and with the visit's queue ticket (so the replica
//! that matches it adds its spans to the same trace).
//!
//! Without a tracing pipeline (no OTLP endpoint) spans have no OpenTelemetry
//! context: [`of`] gives `None`, nothing is attached anywhere and parsing an
//! incoming value costs one string check.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The HTTP header (W3C Trace Context).
pub const HEADER: &str = "traceparent";

/// A span's place in a trace: `00-<trace id>-<span id>-<flags>` in hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Bit 0: sampled (the other bits are kept as received).
    pub flags: u8,
}

fn hex_into(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

impl TraceParent {
    /// Parses version `00` (and, as the spec asks, the first four fields of
    /// a later version). All-zero ids and version `ff` are invalid.
    pub fn parse(s: &str) -> Option<TraceParent> {
        let s = s.trim();
        if s.len() < 55 || s.len() > 512 {
            return None;
        }
        let mut parts = s.splitn(5, '-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        let mut v = [0u8; 1];
        hex_into(version, &mut v)?;
        if v[0] == 0xff || (v[0] == 0 && (rest.is_some() || s.len() != 55)) {
            return None;
        }
        let mut tp = TraceParent {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: 0,
        };
        hex_into(trace, &mut tp.trace_id)?;
        hex_into(span, &mut tp.span_id)?;
        let mut f = [0u8; 1];
        hex_into(flags, &mut f)?;
        tp.flags = f[0];
        if tp.trace_id == [0; 16] || tp.span_id == [0; 8] {
            return None;
        }
        Some(tp)
    }

    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id in hex (how trace back ends show and search it).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// As an OpenTelemetry remote span context.
    pub fn span_context(&self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        )
    }

    fn from_span_context(sc: &SpanContext) -> Option<TraceParent> {
        sc.is_valid().then(|| TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TraceParent::parse(&s).ok_or_else(|| serde::de::Error::custom("not a W3C traceparent"))
    }
}

/// Lenient reading of an optional `traceparent` field: a malformed value is
/// dropped (the span then starts a trace of its own) instead of failing the
/// message that carries it.
pub fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TraceParent>, D::Error> {
    let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
    Ok(s.and_then(|s| TraceParent::parse(&s)))
}

/// Where `span` sits in its trace; `None` when tracing is off (or the span
/// is disabled).
pub fn of(span: &tracing::Span) -> Option<TraceParent> {
    let cx = span.context();
    TraceParent::from_span_context(cx.span().span_context())
}

/// The current span's place, for an outgoing call.
pub fn current() -> Option<TraceParent> {
    of(&tracing::Span::current())
}

/// Makes `parent` (from another process) the parent of the new `span`.
/// Call before the span is first entered.
pub fn set_parent(span: &tracing::Span, parent: Option<&TraceParent>) {
    if let Some(p) = parent {
        let cx = opentelemetry::Context::new().with_remote_span_context(p.span_context());
        // Fails only when tracing is off or the span is disabled: nothing to join then.
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to another trace's span (the partner's visit, say).
pub fn add_link(span: &tracing::Span, other: Option<&TraceParent>) {
    if let Some(o) = other {
        span.add_link(o.span_context());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_round_trips() {
        let tp = TraceParent::parse(EXAMPLE).expect("valid");
        assert!(tp.sampled());
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.to_string(), EXAMPLE);
        let json = serde_json::to_string(&tp).expect("serializes");
        assert_eq!(json, format!("\"{EXAMPLE}\""));
        assert_eq!(serde_json::from_str::<TraceParent>(&json).ok(), Some(tp));
    }

    #[test]
    fn malformed_and_invalid_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-whatever";
        let tp = TraceParent::parse(later).expect("valid");
        assert!(!tp.sampled());
    }

    #[test]
    fn an_optional_field_with_garbage_reads_as_none() {
        #[derive(Deserialize)]
        struct Msg {
            #[serde(default, deserialize_with = "lenient")]
            traceparent: Option<TraceParent>,
        }
        let m: Msg = serde_json::from_str(r#"{"traceparent":"nonsense"}"#).expect("parses");
        assert_eq!(m.traceparent, None);
        let m: Msg = serde_json::from_str(&format!(r#"{{"traceparent":"{EXAMPLE}"}}"#)).expect("parses");
        assert!(m.traceparent.is_some());
        let m: Msg = serde_json::from_str("{}").expect("parses");
        assert_eq!(m.traceparent, None);
    }

    #[test]
    fn without_a_tracing_pipeline_a_span_has_no_place() {
        let span = tracing::info_span!("no pipeline");
        assert_eq!(of(&span), None);
        set_parent(&span, TraceParent::parse(EXAMPLE).as_ref());
        assert_eq!(of(&span), None);
    }
}
