//! OTLP/protobuf trace requests read in place, without decoding them into owned messages.
//!
//! Decoding a request into `opentelemetry-proto` messages and then into [`Span`]s allocated a
//! string per key, value and name and freed them all once the spans were encoded into columns:
//! most of a receiver's CPU. Here a receiver checks the request's outline in one pass that
//! allocates only for resources and scopes ([`scan_traces`]: messages and their lengths, each
//! span's start time and whether it is a request), keeps the bytes, and the store reads each span
//! straight from them into its columns ([`RawSpans::read_span`] into a reused [`SpanView`]),
//! checking it as it goes: a span is parsed once. A request whose span fails that check is
//! refused whole, with the same message a receiver would have given.
//!
//! Reading applies exactly the rules of [`crate::otlp::spans_from_otlp`]: the same ids are
//! refused with the same messages, attribute values become the same text, a repeated key keeps
//! its last value.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use prost::Message;

use crate::otlp::InvalidData;
use crate::{Attrs, Resource, Scope, Span, SpanId, SpanKind, StatusCode, TraceId};

/// An `ExportTraceServiceRequest` whose outline is checked, kept as the bytes it came in; its
/// spans are checked as they are read ([`RawSpans::read_span`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RawSpans {
    pub bytes: Bytes,
    /// One per `ScopeSpans` holding spans, in request order.
    pub groups: Vec<RawGroup>,
    /// Every span, in request order.
    pub spans: Vec<SpanRef>,
}

/// The resource and scope shared by a run of spans (decoded: enrichment works on them).
#[derive(Clone, Debug, PartialEq)]
pub struct RawGroup {
    pub resource: Arc<Resource>,
    pub scope: Arc<Scope>,
    pub spans: usize,
    /// Spans that are requests: roots, and server or consumer spans.
    pub requests: usize,
    /// Where the group is in the request (`resourceSpans[.0].scopeSpans[.1]`), for messages.
    pub at: (u32, u32),
}

/// Where one span's message lies in [`RawSpans::bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanRef {
    pub group: u32,
    /// Its index in its group's `spans`, for messages.
    pub index: u32,
    pub offset: u32,
    pub len: u32,
    pub start_unix_nano: u64,
}

impl RawSpans {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The message of `span`.
    pub fn span_bytes(&self, span: &SpanRef) -> &[u8] {
        let start = span.offset as usize;
        &self.bytes[start..start + span.len as usize]
    }

    /// Reads span `i` (request order) into `view`, refusing what the decoded path refuses,
    /// with its message (`resourceSpans[r].scopeSpans[s].spans[k].<field>: …`).
    pub fn read_span<'a>(&'a self, i: usize, view: &mut SpanView<'a>) -> Result<(), WireError> {
        let s = &self.spans[i];
        let (ri, si) = self.groups[s.group as usize].at;
        let k = s.index;
        parse_span(self.span_bytes(s), view, &|f| {
            format!("resourceSpans[{ri}].scopeSpans[{si}].spans[{k}].{f}")
        })
    }
}

/// Why a request was refused: not protobuf of the expected shape, or valid protobuf carrying
/// data OTLP forbids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    Protobuf(String),
    Invalid(InvalidData),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Protobuf(m) => f.write_str(m),
            WireError::Invalid(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for WireError {}

#[cold]
#[inline(never)]
fn unsupported_wire_type(w: u64) -> WireError {
    WireError::Protobuf(format!("unsupported wire type {w}"))
}

#[cold]
#[inline(never)]
fn malformed(what: &str) -> WireError {
    WireError::Protobuf(what.to_string())
}

/// One field of a protobuf message.
#[derive(Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf, pos: 0 }
}

impl<'a> Fields<'a> {
    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        // Tags, lengths of short strings and small enums: one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(malformed("buffer ends inside a varint"));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(malformed("varint longer than 10 bytes"))
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| malformed("buffer ends inside a field"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Reads the next field; the caller has checked that one is left. Always inlined: as a call,
    /// saving and restoring registers around it was a third of its cost (7 % of the write path).
    #[inline(always)]
    fn field(&mut self) -> Result<(u32, Value<'a>), WireError> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| malformed("field number too large"))?;
        if number == 0 {
            return Err(malformed("field number 0"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().unwrap_or_default(),
            )),
            2 => {
                let n =
                    usize::try_from(self.varint()?).map_err(|_| malformed("length too large"))?;
                Value::Bytes(self.take(n)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().unwrap_or_default(),
            )),
            w => return Err(unsupported_wire_type(w)),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), WireError>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        (self.pos < self.buf.len()).then(|| self.field())
    }
}

#[cold]
#[inline(never)]
fn wrong_type(message: &str, field: &str) -> WireError {
    WireError::Protobuf(format!("{message}.{field}: invalid wire type"))
}

fn bytes_of<'a>(v: Value<'a>, message: &str, field: &str) -> Result<&'a [u8], WireError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(wrong_type(message, field)),
    }
}

fn str_of<'a>(v: Value<'a>, message: &str, field: &str) -> Result<&'a str, WireError> {
    text(bytes_of(v, message, field)?, message, field)
}

fn text<'a>(b: &'a [u8], message: &str, field: &str) -> Result<&'a str, WireError> {
    if b.is_ascii() {
        // SAFETY: ASCII is UTF-8. Nearly every name, key and value is ASCII, and checking that
        // a word at a time costs a fifth of `from_utf8` on short strings.
        return Ok(unsafe { std::str::from_utf8_unchecked(b) });
    }
    std::str::from_utf8(b).map_err(|_| {
        WireError::Protobuf(format!(
            "{message}.{field}: invalid string value: data is not UTF-8 encoded"
        ))
    })
}

fn varint_of(v: Value<'_>, message: &str, field: &str) -> Result<u64, WireError> {
    match v {
        Value::Varint(n) => Ok(n),
        _ => Err(wrong_type(message, field)),
    }
}

fn fixed64_of(v: Value<'_>, message: &str, field: &str) -> Result<u64, WireError> {
    match v {
        Value::Fixed64(n) => Ok(n),
        _ => Err(wrong_type(message, field)),
    }
}

fn fixed32_of(v: Value<'_>, message: &str, field: &str) -> Result<u32, WireError> {
    match v {
        Value::Fixed32(n) => Ok(n),
        _ => Err(wrong_type(message, field)),
    }
}

/// Attribute text as [`crate::any_value_to_string`] renders it; string values are borrowed.
fn any_value(buf: &[u8]) -> Result<Cow<'_, str>, WireError> {
    // A oneof keeps its last member; only a trailing string can be borrowed.
    let mut last = None;
    for f in fields(buf) {
        let (n, v) = f?;
        last = Some((n, v));
    }
    match last {
        None => Ok(Cow::Borrowed("")),
        Some((1, v)) => Ok(Cow::Borrowed(str_of(v, "AnyValue", "string_value")?)),
        // Scalars are read here as prost would read them; other shapes (and wrong wire types,
        // for prost's message) go through the decoded value.
        Some((2, Value::Varint(b))) => Ok(Cow::Borrowed(if b != 0 { "true" } else { "false" })),
        Some((3, Value::Varint(i))) => Ok(Cow::Owned((i as i64).to_string())),
        Some((4, Value::Fixed64(d))) => {
            Ok(Cow::Owned(crate::attrs::format_double(f64::from_bits(d))))
        }
        Some(_) => {
            let v =
                AnyValue::decode(buf).map_err(|e| WireError::Protobuf(format!("AnyValue: {e}")))?;
            Ok(Cow::Owned(crate::any_value_to_string(&v)))
        }
    }
}

/// Attributes borrowed from the request, in the order the model keeps them.
pub type AttrsView<'a> = Vec<(&'a str, Cow<'a, str>)>;

/// The key and string of a string attribute in the usual encoding: `key`, then `value` holding
/// only `string_value`, each once and in that order, with one-byte lengths. `None` for any other
/// shape, which the general reader takes (it reads this shape the same way).
fn string_key_value(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let [0x0a, kl, rest @ ..] = buf else {
        return None;
    };
    let kl = usize::from(*kl);
    if kl >= 0x80 || rest.len() < kl {
        return None;
    }
    let (key, rest) = rest.split_at(kl);
    let [0x12, vl, value @ ..] = rest else {
        return None;
    };
    if *vl >= 0x80 || usize::from(*vl) != value.len() {
        return None;
    }
    let [0x0a, sl, s @ ..] = value else {
        return None;
    };
    (*sl < 0x80 && usize::from(*sl) == s.len()).then_some((key, s))
}

/// Appends a `KeyValue`; a repeated key replaces the earlier value in place (`from` is where
/// this attribute list starts in `out`).
fn key_value<'a>(buf: &'a [u8], out: &mut AttrsView<'a>, from: usize) -> Result<(), WireError> {
    let (mut key, mut value) = ("", Cow::Borrowed(""));
    if let Some((k, v)) = string_key_value(buf) {
        key = text(k, "KeyValue", "key")?;
        value = Cow::Borrowed(text(v, "AnyValue", "string_value")?);
    } else {
        for f in fields(buf) {
            match f? {
                (1, v) => key = str_of(v, "KeyValue", "key")?,
                (2, v) => value = any_value(bytes_of(v, "KeyValue", "value")?)?,
                _ => {}
            }
        }
    }
    if let Some(slot) = out[from..].iter_mut().find(|(k, _)| *k == key) {
        slot.1 = value;
    } else {
        out.push((key, value));
    }
    Ok(())
}

fn owned(attrs: AttrsView<'_>) -> Attrs {
    attrs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_owned()))
        .collect()
}

/// [`crate::otlp`]'s id check, with its error as a [`WireError`].
fn id<const N: usize>(
    bytes: &[u8],
    optional: bool,
    what: &dyn Fn() -> String,
) -> Result<Option<[u8; N]>, WireError> {
    crate::otlp::id(bytes, optional, what).map_err(WireError::Invalid)
}

/// A span event; its attributes are `SpanView::event_attributes[attributes]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventView<'a> {
    pub time_unix_nano: u64,
    pub name: &'a str,
    pub attributes: std::ops::Range<usize>,
}

/// A span link; its attributes are `SpanView::link_attributes[attributes]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkView<'a> {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub trace_state: &'a str,
    pub attributes: std::ops::Range<usize>,
}

/// One span, borrowing its strings; reused from span to span so its vectors keep their room.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanView<'a> {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub trace_state: &'a str,
    pub name: &'a str,
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: AttrsView<'a>,
    pub events: Vec<EventView<'a>>,
    pub event_attributes: AttrsView<'a>,
    pub links: Vec<LinkView<'a>>,
    pub link_attributes: AttrsView<'a>,
    pub status_code: StatusCode,
    pub status_message: &'a str,
}

impl Default for SpanView<'_> {
    fn default() -> Self {
        SpanView {
            trace_id: TraceId::default(),
            span_id: SpanId::default(),
            parent_span_id: None,
            trace_state: "",
            name: "",
            kind: SpanKind::Unspecified,
            start_unix_nano: 0,
            end_unix_nano: 0,
            attributes: Vec::new(),
            events: Vec::new(),
            event_attributes: Vec::new(),
            links: Vec::new(),
            link_attributes: Vec::new(),
            status_code: StatusCode::Unset,
            status_message: "",
        }
    }
}

fn borrow_attrs<'a>(attrs: &'a Attrs, out: &mut AttrsView<'a>) -> std::ops::Range<usize> {
    let from = out.len();
    out.extend(
        attrs
            .iter()
            .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str()))),
    );
    from..out.len()
}

impl<'a> SpanView<'a> {
    fn clear(&mut self) {
        let (mut a, mut e, mut ea, mut l, mut la) = (
            std::mem::take(&mut self.attributes),
            std::mem::take(&mut self.events),
            std::mem::take(&mut self.event_attributes),
            std::mem::take(&mut self.links),
            std::mem::take(&mut self.link_attributes),
        );
        a.clear();
        e.clear();
        ea.clear();
        l.clear();
        la.clear();
        *self = SpanView {
            attributes: a,
            events: e,
            event_attributes: ea,
            links: l,
            link_attributes: la,
            ..SpanView::default()
        };
    }

    /// Views a decoded span.
    pub fn fill_from(&mut self, s: &'a Span) {
        self.clear();
        self.trace_id = s.trace_id;
        self.span_id = s.span_id;
        self.parent_span_id = s.parent_span_id;
        self.trace_state = &s.trace_state;
        self.name = &s.name;
        self.kind = s.kind;
        self.start_unix_nano = s.start_unix_nano;
        self.end_unix_nano = s.end_unix_nano;
        borrow_attrs(&s.attributes, &mut self.attributes);
        for e in &s.events {
            let attributes = borrow_attrs(&e.attributes, &mut self.event_attributes);
            self.events.push(EventView {
                time_unix_nano: e.time_unix_nano,
                name: &e.name,
                attributes,
            });
        }
        for l in &s.links {
            let attributes = borrow_attrs(&l.attributes, &mut self.link_attributes);
            self.links.push(LinkView {
                trace_id: l.trace_id,
                span_id: l.span_id,
                trace_state: &l.trace_state,
                attributes,
            });
        }
        self.status_code = s.status_code;
        self.status_message = &s.status_message;
    }

    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }
}

/// Reads one `Span` message into `view`. `at` names a field of this span in error messages.
pub fn parse_span<'a>(
    buf: &'a [u8],
    view: &mut SpanView<'a>,
    at: &dyn Fn(&str) -> String,
) -> Result<(), WireError> {
    view.clear();
    let (mut trace, mut span, mut parent): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    let mut links: Vec<(usize, &'a [u8], &'a [u8])> = Vec::new();
    const M: &str = "Span";
    for f in fields(buf) {
        match f? {
            (1, v) => trace = bytes_of(v, M, "trace_id")?,
            (2, v) => span = bytes_of(v, M, "span_id")?,
            (3, v) => view.trace_state = str_of(v, M, "trace_state")?,
            (4, v) => parent = bytes_of(v, M, "parent_span_id")?,
            (5, v) => view.name = str_of(v, M, "name")?,
            (6, v) => view.kind = SpanKind::from_otlp(varint_of(v, M, "kind")? as i32),
            (7, v) => view.start_unix_nano = fixed64_of(v, M, "start_time_unix_nano")?,
            (8, v) => view.end_unix_nano = fixed64_of(v, M, "end_time_unix_nano")?,
            (9, v) => key_value(bytes_of(v, M, "attributes")?, &mut view.attributes, 0)?,
            (11, v) => {
                let mut e = EventView {
                    attributes: view.event_attributes.len()..view.event_attributes.len(),
                    ..EventView::default()
                };
                let from = e.attributes.start;
                for f in fields(bytes_of(v, M, "events")?) {
                    match f? {
                        (1, v) => e.time_unix_nano = fixed64_of(v, "Event", "time_unix_nano")?,
                        (2, v) => e.name = str_of(v, "Event", "name")?,
                        (3, v) => key_value(
                            bytes_of(v, "Event", "attributes")?,
                            &mut view.event_attributes,
                            from,
                        )?,
                        (4, v) => {
                            varint_of(v, "Event", "dropped_attributes_count")?;
                        }
                        _ => {}
                    }
                }
                e.attributes.end = view.event_attributes.len();
                view.events.push(e);
            }
            (13, v) => {
                let mut l = LinkView::default();
                let from = view.link_attributes.len();
                let (mut lt, mut ls): (&[u8], &[u8]) = (&[], &[]);
                for f in fields(bytes_of(v, M, "links")?) {
                    match f? {
                        (1, v) => lt = bytes_of(v, "Link", "trace_id")?,
                        (2, v) => ls = bytes_of(v, "Link", "span_id")?,
                        (3, v) => l.trace_state = str_of(v, "Link", "trace_state")?,
                        (4, v) => key_value(
                            bytes_of(v, "Link", "attributes")?,
                            &mut view.link_attributes,
                            from,
                        )?,
                        (5, v) => {
                            varint_of(v, "Link", "dropped_attributes_count")?;
                        }
                        (6, v) => {
                            fixed32_of(v, "Link", "flags")?;
                        }
                        _ => {}
                    }
                }
                l.attributes = from..view.link_attributes.len();
                links.push((view.links.len(), lt, ls));
                view.links.push(l);
            }
            (15, v) => {
                // A repeated message field merges: later members override earlier ones.
                for f in fields(bytes_of(v, M, "status")?) {
                    match f? {
                        (2, v) => view.status_message = str_of(v, "Status", "message")?,
                        (3, v) => {
                            view.status_code =
                                StatusCode::from_otlp(varint_of(v, "Status", "code")? as i32)
                        }
                        _ => {}
                    }
                }
            }
            (10 | 12 | 14, v) => {
                varint_of(v, M, "dropped_count")?;
            }
            (16, v) => {
                fixed32_of(v, M, "flags")?;
            }
            _ => {}
        }
    }
    // Ids are checked in the order the decoded path checks them: links first.
    for (li, lt, ls) in links {
        let l = &mut view.links[li];
        l.trace_id =
            TraceId(id(lt, false, &|| at(&format!("links[{li}].traceId")))?.unwrap_or_default());
        l.span_id =
            SpanId(id(ls, false, &|| at(&format!("links[{li}].spanId")))?.unwrap_or_default());
    }
    view.trace_id = TraceId(id(trace, false, &|| at("traceId"))?.unwrap_or_default());
    view.span_id = SpanId(id(span, false, &|| at("spanId"))?.unwrap_or_default());
    view.parent_span_id = id(parent, true, &|| at("parentSpanId"))?.map(SpanId);
    Ok(())
}

fn parse_resource(buf: &[u8], schema_url: &str) -> Result<Resource, WireError> {
    let mut attrs = AttrsView::new();
    for f in fields(buf) {
        if let (1, v) = f? {
            key_value(bytes_of(v, "Resource", "attributes")?, &mut attrs, 0)?;
        }
    }
    Ok(Resource {
        attributes: owned(attrs),
        schema_url: schema_url.to_string(),
    })
}

fn parse_scope(buf: Option<&[u8]>, schema_url: &str) -> Result<Scope, WireError> {
    let mut s = Scope {
        schema_url: schema_url.to_string(),
        ..Scope::default()
    };
    let mut attrs = AttrsView::new();
    const M: &str = "InstrumentationScope";
    for f in fields(buf.unwrap_or_default()) {
        match f? {
            (1, v) => s.name = str_of(v, M, "name")?.to_string(),
            (2, v) => s.version = str_of(v, M, "version")?.to_string(),
            (3, v) => key_value(bytes_of(v, M, "attributes")?, &mut attrs, 0)?,
            (4, v) => {
                s.dropped_attributes_count = varint_of(v, M, "dropped_attributes_count")? as u32
            }
            _ => {}
        }
    }
    s.attributes = owned(attrs);
    Ok(s)
}

/// What a span's outline says before it is read: when it started, and whether it is a request
/// (a root, or a server or consumer span). Its ids and the rest are checked when it is read.
fn skim_span(buf: &[u8]) -> Result<(u64, bool), WireError> {
    const M: &str = "Span";
    let (mut start, mut child, mut kind) = (0, false, SpanKind::Unspecified);
    for f in fields(buf) {
        match f? {
            (4, v) => child = !bytes_of(v, M, "parent_span_id")?.is_empty(),
            (6, v) => kind = SpanKind::from_otlp(varint_of(v, M, "kind")? as i32),
            (7, v) => start = fixed64_of(v, M, "start_time_unix_nano")?,
            _ => {}
        }
    }
    Ok((
        start,
        !child || matches!(kind, SpanKind::Server | SpanKind::Consumer),
    ))
}

/// Checks the outline of an `ExportTraceServiceRequest` and indexes its spans, keeping `bytes`.
pub fn scan_traces(bytes: Bytes) -> Result<RawSpans, WireError> {
    let buf: &[u8] = &bytes;
    if u32::try_from(buf.len()).is_err() {
        return Err(malformed("request larger than 4 GiB"));
    }
    let (mut groups, mut spans) = (Vec::new(), Vec::new());
    let mut ri = 0;
    for f in fields(buf) {
        let (1, v) = f? else { continue };
        let rs = bytes_of(v, "ExportTraceServiceRequest", "resource_spans")?;
        let (mut resource, mut schema_url, mut scopes) = (None, "", Vec::new());
        for f in fields(rs) {
            match f? {
                (1, v) => resource = Some(bytes_of(v, "ResourceSpans", "resource")?),
                (2, v) => scopes.push(bytes_of(v, "ResourceSpans", "scope_spans")?),
                (3, v) => schema_url = str_of(v, "ResourceSpans", "schema_url")?,
                _ => {}
            }
        }
        let resource = Arc::new(parse_resource(resource.unwrap_or_default(), schema_url)?);
        for (si, ss) in scopes.into_iter().enumerate() {
            let (mut scope, mut schema_url, mut items) = (None, "", Vec::new());
            for f in fields(ss) {
                match f? {
                    (1, v) => scope = Some(bytes_of(v, "ScopeSpans", "scope")?),
                    (2, v) => items.push(bytes_of(v, "ScopeSpans", "spans")?),
                    (3, v) => schema_url = str_of(v, "ScopeSpans", "schema_url")?,
                    _ => {}
                }
            }
            let scope = parse_scope(scope, schema_url)?;
            if items.is_empty() {
                continue;
            }
            let group = u32::try_from(groups.len()).unwrap_or(u32::MAX);
            let mut requests = 0;
            for (i, s) in items.iter().enumerate() {
                let (start_unix_nano, request) = skim_span(s)?;
                requests += usize::from(request);
                spans.push(SpanRef {
                    group,
                    index: i as u32,
                    // Inside `buf`, whose length fits in u32 (checked above).
                    offset: (s.as_ptr() as usize - buf.as_ptr() as usize) as u32,
                    len: s.len() as u32,
                    start_unix_nano,
                });
            }
            groups.push(RawGroup {
                resource: resource.clone(),
                scope: Arc::new(scope),
                spans: items.len(),
                requests,
                at: (ri, si as u32),
            });
        }
        ri += 1;
    }
    Ok(RawSpans {
        bytes,
        groups,
        spans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Batch;
    use crate::otlp::spans_from_otlp;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value as V,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as OtlpSpan};
    use opentelemetry_proto::tonic::trace::v1::{Status, span};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn value(r: &mut Rng, depth: u32) -> Option<AnyValue> {
        let v = match r.below(if depth > 1 { 6 } else { 9 }) {
            0 => return None,
            1 => V::StringValue(match r.below(3) {
                0 => format!("välue-{}", r.below(50)),
                1 => format!("value-{}", r.below(50)),
                // Past a one-byte length.
                _ => "v".repeat(100 + r.below(100) as usize),
            }),
            2 => V::IntValue(r.next() as i64),
            3 => V::DoubleValue(f64::from_bits(r.next() % (1 << 62))),
            4 => V::BoolValue(r.below(2) == 0),
            5 => V::BytesValue(vec![r.below(256) as u8; r.below(5) as usize]),
            6 => V::ArrayValue(ArrayValue {
                values: (0..r.below(3))
                    .filter_map(|_| value(r, depth + 1))
                    .collect(),
            }),
            7 => V::KvlistValue(KeyValueList {
                values: attrs(r, depth + 1),
            }),
            _ => V::StringValue(String::new()),
        };
        Some(AnyValue { value: Some(v) })
    }

    fn attrs(r: &mut Rng, depth: u32) -> Vec<KeyValue> {
        (0..r.below(6))
            .map(|_| KeyValue {
                // Few keys, so repeats (last one wins) happen.
                key: match r.below(6) {
                    0 => format!("{}{}", "k".repeat(130), r.below(2)),
                    n => format!("k{n}"),
                },
                value: value(r, depth),
                ..Default::default()
            })
            .collect()
    }

    fn id(r: &mut Rng, n: usize) -> Vec<u8> {
        (0..n).map(|_| (r.below(255) + 1) as u8).collect()
    }

    fn request(r: &mut Rng) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: (0..1 + r.below(3))
                .map(|_| ResourceSpans {
                    resource: (r.below(4) > 0).then(|| OtlpResource {
                        attributes: attrs(r, 0),
                        ..Default::default()
                    }),
                    scope_spans: (0..r.below(3))
                        .map(|_| ScopeSpans {
                            scope: (r.below(3) > 0).then(|| InstrumentationScope {
                                name: format!("lib{}", r.below(3)),
                                version: "1.0".into(),
                                attributes: attrs(r, 0),
                                dropped_attributes_count: r.below(3) as u32,
                            }),
                            spans: (0..r.below(5)).map(|_| span(r)).collect(),
                            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        }
    }

    fn span(r: &mut Rng) -> OtlpSpan {
        let start = r.next() >> 2;
        OtlpSpan {
            trace_id: id(r, 16),
            span_id: id(r, 8),
            parent_span_id: if r.below(2) == 0 { vec![] } else { id(r, 8) },
            trace_state: if r.below(4) == 0 {
                "k=v".into()
            } else {
                String::new()
            },
            name: format!("GET /ünïcode/{}", r.below(9)),
            kind: r.below(7) as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + r.below(1 << 30),
            attributes: attrs(r, 0),
            dropped_attributes_count: r.below(2) as u32,
            events: (0..r.below(3))
                .map(|_| span::Event {
                    time_unix_nano: r.next(),
                    name: format!("ev{}", r.below(4)),
                    attributes: attrs(r, 0),
                    dropped_attributes_count: 0,
                })
                .collect(),
            links: (0..r.below(3))
                .map(|_| span::Link {
                    trace_id: id(r, 16),
                    span_id: id(r, 8),
                    trace_state: String::new(),
                    attributes: attrs(r, 0),
                    dropped_attributes_count: 0,
                    flags: 1,
                })
                .collect(),
            status: (r.below(3) > 0).then(|| Status {
                message: format!("m{}", r.below(3)),
                code: r.below(4) as i32,
            }),
            flags: 0x100,
            ..Default::default()
        }
    }

    /// What the decoded path makes of `req`, and what the in-place reader makes of its bytes.
    fn both(req: &ExportTraceServiceRequest) -> (Result<Batch, String>, Result<RawSpans, String>) {
        let bytes = Bytes::from(req.encode_to_vec());
        (
            spans_from_otlp(req.clone()).map_err(|e| e.0),
            scan_and_read(bytes).map_err(|e| e.to_string()),
        )
    }

    /// The outline check and then reading every span, as a store does.
    fn scan_and_read(bytes: Bytes) -> Result<RawSpans, WireError> {
        let raw = scan_traces(bytes)?;
        read_all(&raw)?;
        Ok(raw)
    }

    /// Reads every span: `Ok` when the whole request is valid OTLP.
    fn read_all(raw: &RawSpans) -> Result<(), WireError> {
        let mut view = SpanView::default();
        (0..raw.spans.len()).try_for_each(|i| raw.read_span(i, &mut view))
    }

    #[test]
    fn the_string_attribute_shortcut_takes_only_its_own_shape() {
        let kv = |key: &str, v: Option<V>| {
            KeyValue {
                key: key.into(),
                value: v.map(|v| AnyValue { value: Some(v) }),
                ..Default::default()
            }
            .encode_to_vec()
        };
        let s = |x: &str| Some(V::StringValue(x.into()));
        let b = kv("http.method", s("GET"));
        assert_eq!(
            string_key_value(&b),
            Some((&b"http.method"[..], &b"GET"[..]))
        );
        assert_eq!(
            string_key_value(&kv("k", s(""))),
            Some((&b"k"[..], &b""[..]))
        );
        for other in [
            kv("k", None),
            kv("k", Some(V::IntValue(3))),
            kv(&"k".repeat(128), s("v")),
            kv("k", s(&"v".repeat(128))),
            // The value before the key, and a field after the value.
            [&kv("", s("v"))[..], &kv("k", None)[..]].concat(),
            [&kv("k", s("v"))[..], &[0x18, 1][..]].concat(),
        ] {
            assert_eq!(string_key_value(&other), None, "{other:?}");
        }
        // Whichever reader takes it, a string attribute reads the same.
        for b in [
            kv("k", s("v")),
            [&kv("", s("v"))[..], &kv("k", None)[..]].concat(),
        ] {
            let mut out = AttrsView::new();
            key_value(&b, &mut out, 0).unwrap();
            assert_eq!(out, vec![("k", Cow::Borrowed("v"))]);
        }
    }

    #[test]
    fn reads_every_span_as_the_decoded_path_does() {
        let mut r = Rng(0x9e3779b97f4a7c15);
        let mut seen = 0;
        for _ in 0..400 {
            let req = request(&mut r);
            let (Ok(Batch::Spans(groups)), Ok(raw)) = both(&req) else {
                panic!("both paths accept generated requests");
            };
            assert_eq!(groups.len(), raw.groups.len());
            let mut spans = raw.spans.iter().enumerate();
            let (mut a, mut b) = (SpanView::default(), SpanView::default());
            for (g, rg) in groups.iter().zip(&raw.groups) {
                assert_eq!(g.resource, rg.resource);
                assert_eq!(g.scope, rg.scope);
                assert_eq!(g.items.len(), rg.spans);
                for s in &g.items {
                    let (i, sr) = spans.next().expect("as many spans");
                    a.fill_from(s);
                    raw.read_span(i, &mut b).unwrap();
                    assert_eq!(a, b);
                    assert_eq!(sr.start_unix_nano, s.start_unix_nano);
                    seen += 1;
                }
            }
            assert!(spans.next().is_none(), "no span left over");
            assert_eq!(
                Batch::Spans(groups.clone()).span_groups().len(),
                Batch::RawSpans(raw.clone()).span_groups().len()
            );
            for (x, y) in Batch::Spans(groups)
                .span_groups()
                .iter()
                .zip(Batch::RawSpans(raw).span_groups())
            {
                assert_eq!(x.1, y.1, "request counts agree");
            }
        }
        assert!(seen > 500, "the generator made spans ({seen})");
    }

    #[test]
    fn refuses_bad_ids_with_the_decoded_paths_message() {
        let mut r = Rng(7);
        let mut req = request(&mut r);
        req.resource_spans[0].scope_spans = vec![ScopeSpans {
            spans: vec![span(&mut r), span(&mut r)],
            ..Default::default()
        }];
        type Spoil = fn(&mut OtlpSpan);
        let cases: [(&str, Spoil); 5] = [
            ("short trace id", |s| s.trace_id.truncate(3)),
            ("zero span id", |s| s.span_id = vec![0; 8]),
            ("long parent", |s| s.parent_span_id = vec![1; 9]),
            ("missing trace id", |s| s.trace_id.clear()),
            ("bad link", |s| {
                s.links = vec![span::Link {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 7],
                    ..Default::default()
                }]
            }),
        ];
        for (what, spoil) in cases {
            let mut bad = req.clone();
            spoil(&mut bad.resource_spans[0].scope_spans[0].spans[1]);
            let (Err(a), Err(b)) = both(&bad) else {
                panic!("{what}: both paths refuse it");
            };
            assert_eq!(a, b, "{what}");
            assert!(
                b.starts_with("resourceSpans[0].scopeSpans[0].spans[1]."),
                "{b}"
            );
        }
    }

    #[test]
    fn malformed_protobuf_is_refused_and_names_the_problem() {
        let mut r = Rng(11);
        let good = request(&mut r).encode_to_vec();
        for cut in [1, good.len() / 2, good.len().saturating_sub(1)] {
            if cut == 0 || cut >= good.len() {
                continue;
            }
            let e = scan_and_read(Bytes::copy_from_slice(&good[..cut]));
            // A cut may land on a field boundary of the outer message only at its end.
            if let Err(e) = e {
                assert!(matches!(e, WireError::Protobuf(_)), "{e}");
            }
        }
        let e = scan_traces(Bytes::from_static(&[0xff, 0xff, 0xff])).unwrap_err();
        assert!(e.to_string().contains("varint"), "{e}");
        // Field 1 as a varint where a message is expected.
        let e = scan_traces(Bytes::from_static(&[0x08, 0x01])).unwrap_err();
        assert!(e.to_string().contains("resource_spans"), "{e}");
        // A name that is not UTF-8.
        let mut req = request(&mut r);
        req.resource_spans = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span(&mut r)],
                ..Default::default()
            }],
            ..Default::default()
        }];
        req.resource_spans[0].scope_spans[0].spans[0].name = "\u{1}XYZ".into();
        let mut bytes = req.encode_to_vec();
        let at = bytes.windows(4).position(|w| w == b"\x01XYZ").unwrap();
        bytes[at] = 0xff;
        let raw = scan_traces(Bytes::from(bytes)).expect("the outline is sound");
        let e = read_all(&raw).unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
        assert!(e.to_string().contains("Span.name"), "{e}");
    }
}
