//! OTLP profiles (`v1development`) ↔ [`ProfileBatch`].
//!
//! In: every `(value, timestamp)` of a sample becomes one `profile_samples` row, so a profile
//! sent by another agent and one taken here are read the same way. Stacks are resolved through
//! the request's dictionary (stack → locations → lines → functions, mappings for modules) and
//! every index is checked: a bad one names where it was found and how large the table is.
//!
//! Out: samples are grouped by process (one `ResourceProfiles` with `service.name`,
//! `host.name`, `process.pid`), by kind (one `Profile` per `cpu` / `off_cpu`), then by stack,
//! thread and label, each row kept as one timestamp and one value in nanoseconds, so a receiver
//! that imports what was exported stores the same rows.
//!
//! Conventions both ways: kernel frames carry the location attribute `profile.frame.type =
//! kernel` (and the `_[k]` suffix in stored names), JIT frames the mapping `[jit]` (`_[j]`), and a
//! stack that did not reach its thread's start ends (at the root) in a location whose function
//! is `[truncated]`, as the folded format shows it.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::profiles::v1development::{
    Function, KeyValueAndUnit, Line, Location, Mapping, Profile, ProfilesDictionary,
    ResourceProfiles, Sample, ScopeProfiles, Stack, ValueType,
};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;

use crate::otlp::InvalidData;
use crate::{Batch, ProfileBatch, ProfileKind, ProfileSample, ProfileStack};

/// The root frame that marks a stack cut short (same text as the folded format's).
pub const TRUNCATED_FRAME: &str = "[truncated]";
/// Sample attribute carrying why the sampling rate was raised (`high_traffic`).
pub const LABEL_ATTRIBUTE: &str = "oxeye.profile.label";
/// Semantic-conventions location attribute naming the frame's runtime.
pub const FRAME_TYPE_ATTRIBUTE: &str = "profile.frame.type";

const KERNEL_SUFFIX: &str = "_[k]";
const JIT_SUFFIX: &str = "_[j]";
const JIT_MODULE: &str = "[jit]";
const KERNEL_MODULE: &str = "[kernel]";

fn out_of_range(at: &str, index: i32, table: &str, len: usize) -> InvalidData {
    InvalidData(format!(
        "{at}: index {index} is out of range (dictionary.{table} has {len} entries)"
    ))
}

/// `table[index]`, or an error naming where the index was found.
fn get<'a, T>(
    table: &'a [T],
    index: i32,
    name: &str,
    at: &dyn Fn() -> String,
) -> Result<&'a T, InvalidData> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or_else(|| out_of_range(&at(), index, name, table.len()))
}

/// The dictionary with empty tables standing in for a missing one, so index 0 of every table
/// (the "null" entry) stays valid for requests that have no dictionary and no references.
struct Dict<'a> {
    d: &'a ProfilesDictionary,
}

impl Dict<'_> {
    fn string(&self, index: i32, at: &dyn Fn() -> String) -> Result<&str, InvalidData> {
        if index == 0 && self.d.string_table.is_empty() {
            return Ok("");
        }
        get(&self.d.string_table, index, "stringTable", at).map(String::as_str)
    }

    /// An attribute value as text, string-table references resolved.
    fn value(&self, v: Option<&AnyValue>, at: &dyn Fn() -> String) -> Result<String, InvalidData> {
        match v.and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValueStrindex(i)) => Ok(self
                .string(*i, &|| format!("{}.stringValueStrindex", at()))?
                .to_string()),
            Some(_) => Ok(v.map(crate::any_value_to_string).unwrap_or_default()),
            None => Ok(String::new()),
        }
    }

    /// Resource attributes, whose keys and values may also point into the string table.
    fn resource(
        &self,
        r: Option<OtlpResource>,
        at: &dyn Fn() -> String,
    ) -> Result<Vec<(String, String)>, InvalidData> {
        let Some(r) = r else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(r.attributes.len());
        for (k, kv) in r.attributes.iter().enumerate() {
            let kat = || format!("{}.attributes[{k}]", at());
            let key = if kv.key.is_empty() && kv.key_strindex != 0 {
                self.string(kv.key_strindex, &|| format!("{}.keyStrindex", kat()))?
                    .to_string()
            } else {
                kv.key.clone()
            };
            let value = self.value(kv.value.as_ref(), &|| format!("{}.value", kat()))?;
            // A repeated key keeps its last value, as for other signals.
            out.retain(|(k, _): &(String, String)| *k != key);
            out.push((key, value));
        }
        Ok(out)
    }

    /// Sample or location attributes as (key, value text).
    fn attrs(
        &self,
        indices: &[i32],
        at: &dyn Fn() -> String,
    ) -> Result<Vec<(String, String)>, InvalidData> {
        let mut out = Vec::with_capacity(indices.len());
        for (k, &i) in indices.iter().enumerate() {
            let here = || format!("{}.attributeIndices[{k}]", at());
            let kv = get(&self.d.attribute_table, i, "attributeTable", &here)?;
            let key = self.string(kv.key_strindex, &|| {
                format!("dictionary.attributeTable[{i}].keyStrindex")
            })?;
            let value = self.value(kv.value.as_ref(), &|| {
                format!("dictionary.attributeTable[{i}].value")
            })?;
            out.push((key.to_string(), value));
        }
        Ok(out)
    }
}

fn find<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Nanoseconds per unit of a time unit's name, `None` for anything else.
fn time_unit(unit: &str) -> Option<u64> {
    match unit {
        "nanoseconds" | "nanosecond" | "ns" => Some(1),
        "microseconds" | "microsecond" | "us" => Some(1_000),
        "milliseconds" | "millisecond" | "ms" => Some(1_000_000),
        "seconds" | "second" | "s" => Some(1_000_000_000),
        _ => None,
    }
}

/// What a profile measured and how many nanoseconds one unit of its values stands for.
fn profile_shape(
    p: &Profile,
    dict: &Dict<'_>,
    at: &dyn Fn(&str) -> String,
) -> Result<(ProfileKind, u64), InvalidData> {
    let Some(st) = p.sample_type else {
        return Err(InvalidData(format!(
            "{}: missing (oxeye stores cpu and off_cpu time profiles and must know which)",
            at("sampleType")
        )));
    };
    let ty = dict.string(st.type_strindex, &|| at("sampleType.typeStrindex"))?;
    let unit = dict.string(st.unit_strindex, &|| at("sampleType.unitStrindex"))?;
    let kind = match ty {
        "cpu" | "samples" | "sample" | "cpu_time" | "cpu-time" => ProfileKind::Cpu,
        "off_cpu" | "offcpu" | "off-cpu" => ProfileKind::OffCpu,
        other => {
            return Err(InvalidData(format!(
                "{}: type {other:?} (unit {unit:?}) is not stored: oxeye keeps cpu (or samples) \
                 and off_cpu profiles",
                at("sampleType")
            )));
        }
    };
    if let Some(f) = time_unit(unit) {
        return Ok((kind, f));
    }
    if !matches!(unit, "count" | "samples" | "") {
        return Err(InvalidData(format!(
            "{}: unit {unit:?}: expected a time unit (nanoseconds, ...) or count",
            at("sampleType")
        )));
    }
    // Counts weigh one sampling period each.
    let period_unit = match p.period_type {
        Some(pt) => dict.string(pt.unit_strindex, &|| at("periodType.unitStrindex"))?,
        None => "",
    };
    match (time_unit(period_unit), u64::try_from(p.period)) {
        (Some(f), Ok(period)) if period > 0 => Ok((kind, period.saturating_mul(f))),
        _ => Err(InvalidData(format!(
            "{}: values are counts, so periodType must be a time unit and period > 0 \
             (found periodType unit {period_unit:?}, period {})",
            at("sampleType"),
            p.period
        ))),
    }
}

/// FNV-1a over length-prefixed frames and modules: the same stack gets the same id in every
/// request and every run.
fn stack_id(frames: &[String], modules: &[String], truncated: bool) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut write = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    write(b"otlp");
    write(&[u8::from(truncated)]);
    for (f, m) in frames.iter().zip(modules) {
        write(&(f.len() as u64).to_le_bytes());
        write(f.as_bytes());
        write(&(m.len() as u64).to_le_bytes());
        write(m.as_bytes());
    }
    h
}

/// Resolves one stack of the dictionary into stored form (root first).
fn resolve_stack(
    dict: &Dict<'_>,
    index: i32,
    at: &dyn Fn() -> String,
) -> Result<ProfileStack, InvalidData> {
    let d = dict.d;
    let stack = if index == 0 && d.stack_table.is_empty() {
        &Stack::default()
    } else {
        get(&d.stack_table, index, "stackTable", at)?
    };
    // Leaf first, as OTLP orders both locations and the inlined lines of one location.
    let mut frames = Vec::new();
    let mut modules = Vec::new();
    for (j, &li) in stack.location_indices.iter().enumerate() {
        let at = || format!("dictionary.stackTable[{index}].locationIndices[{j}]");
        let loc = get(&d.location_table, li, "locationTable", &at)?;
        let lat = |f: &str| format!("dictionary.locationTable[{li}].{f}");
        let mapping = if loc.mapping_index == 0 && d.mapping_table.is_empty() {
            None
        } else {
            Some(get(
                &d.mapping_table,
                loc.mapping_index,
                "mappingTable",
                &|| lat("mappingIndex"),
            )?)
        };
        let module = match mapping {
            Some(m) => dict.string(m.filename_strindex, &|| {
                format!(
                    "dictionary.mappingTable[{}].filenameStrindex",
                    loc.mapping_index
                )
            })?,
            None => "",
        };
        let attrs = dict.attrs(&loc.attribute_indices, &|| lat(""))?;
        let kernel =
            find(&attrs, FRAME_TYPE_ATTRIBUTE) == Some("kernel") || module == KERNEL_MODULE;
        let suffix = if kernel {
            KERNEL_SUFFIX
        } else if module == JIT_MODULE {
            JIT_SUFFIX
        } else {
            ""
        };
        let module = if kernel && module.is_empty() {
            KERNEL_MODULE
        } else {
            module
        };
        let mut named = false;
        for (k, line) in loc.lines.iter().enumerate() {
            let f = get(
                &d.function_table,
                line.function_index,
                "functionTable",
                &|| lat(&format!("lines[{k}].functionIndex")),
            )?;
            let fat = |x: &str| format!("dictionary.functionTable[{}].{x}", line.function_index);
            let mut name = dict.string(f.name_strindex, &|| fat("nameStrindex"))?;
            if name.is_empty() {
                name = dict.string(f.system_name_strindex, &|| fat("systemNameStrindex"))?;
            }
            if name.is_empty() {
                continue;
            }
            named = true;
            frames.push(format!("{name}{suffix}"));
            modules.push(module.to_string());
        }
        if !named {
            // As the symbolizer names an address it has no symbol for.
            let base = module
                .rsplit('/')
                .next()
                .filter(|b| !b.is_empty())
                .unwrap_or("[unknown]");
            frames.push(format!("{base}+0x{:x}{suffix}", loc.address));
            modules.push(module.to_string());
        }
    }
    frames.reverse();
    modules.reverse();
    let truncated = frames.is_empty() || frames.first().is_some_and(|f| f == TRUNCATED_FRAME);
    if frames.first().is_some_and(|f| f == TRUNCATED_FRAME) {
        frames.remove(0);
        modules.remove(0);
    }
    Ok(ProfileStack {
        stack_id: stack_id(&frames, &modules, truncated),
        first_seen_unix_nano: 0,
        service_name: String::new(),
        frames,
        modules,
        truncated,
    })
}

/// Decodes an OTLP profiles export into samples and stacks; every index is checked.
pub fn profiles_from_otlp(req: ExportProfilesServiceRequest) -> Result<Batch, InvalidData> {
    let empty = ProfilesDictionary::default();
    let dict = Dict {
        d: req.dictionary.as_ref().unwrap_or(&empty),
    };
    let mut out = ProfileBatch::default();
    // Stack index → (id, already emitted for this service).
    let mut stacks: HashMap<i32, ProfileStack> = HashMap::new();
    let mut emitted: std::collections::HashSet<(u64, String)> = Default::default();
    for (ri, rp) in req.resource_profiles.into_iter().enumerate() {
        let res = dict.resource(rp.resource, &|| format!("resourceProfiles[{ri}].resource"))?;
        let service = find(&res, "service.name")
            .unwrap_or("unknown_service")
            .to_string();
        let host = find(&res, "host.name").unwrap_or_default().to_string();
        let res_pid = find(&res, "process.pid").and_then(|p| p.parse::<u32>().ok());
        let res_comm = find(&res, "process.executable.name").unwrap_or_default();
        for (si, sp) in rp.scope_profiles.iter().enumerate() {
            for (pi, p) in sp.profiles.iter().enumerate() {
                let at = |f: &str| {
                    format!("resourceProfiles[{ri}].scopeProfiles[{si}].profiles[{pi}].{f}")
                };
                if p.samples.is_empty() {
                    continue;
                }
                let (kind, unit_ns) = profile_shape(p, &dict, &at)?;
                for (i, s) in p.samples.iter().enumerate() {
                    let sat = |f: &str| at(&format!("samples[{i}].{f}"));
                    if !s.values.is_empty()
                        && !s.timestamps_unix_nano.is_empty()
                        && s.values.len() != s.timestamps_unix_nano.len()
                    {
                        return Err(InvalidData(format!(
                            "{}: {} values but {} timestampsUnixNano: they must pair up",
                            sat("values"),
                            s.values.len(),
                            s.timestamps_unix_nano.len()
                        )));
                    }
                    if s.values.is_empty() && s.timestamps_unix_nano.is_empty() {
                        return Err(InvalidData(format!(
                            "{}: a sample needs values or timestampsUnixNano, found neither",
                            sat("values")
                        )));
                    }
                    if s.timestamps_unix_nano.is_empty() && p.time_unix_nano == 0 {
                        return Err(InvalidData(format!(
                            "{}: no timestampsUnixNano and the profile's timeUnixNano is 0, so \
                             the sample has no time",
                            sat("timestampsUnixNano")
                        )));
                    }
                    let attrs = dict.attrs(&s.attribute_indices, &|| sat(""))?;
                    let stack = match stacks.get(&s.stack_index) {
                        Some(st) => st,
                        None => {
                            let st = resolve_stack(&dict, s.stack_index, &|| sat("stackIndex"))?;
                            stacks.entry(s.stack_index).or_insert(st)
                        }
                    };
                    let n = s.values.len().max(s.timestamps_unix_nano.len());
                    let first_time = s
                        .timestamps_unix_nano
                        .first()
                        .copied()
                        .unwrap_or(p.time_unix_nano);
                    if emitted.insert((stack.stack_id, service.clone())) {
                        out.stacks.push(ProfileStack {
                            first_seen_unix_nano: first_time,
                            service_name: service.clone(),
                            ..stack.clone()
                        });
                    }
                    let pid = find(&attrs, "process.pid")
                        .and_then(|v| v.parse().ok())
                        .or(res_pid)
                        .unwrap_or(0);
                    let tid = find(&attrs, "thread.id")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let comm = find(&attrs, "thread.name").unwrap_or(res_comm);
                    let label = find(&attrs, LABEL_ATTRIBUTE).unwrap_or_default();
                    for k in 0..n {
                        let value = match s.values.get(k) {
                            Some(&v) => u64::try_from(v).map_err(|_| {
                                InvalidData(format!(
                                    "{}: {v} is negative",
                                    sat(&format!("values[{k}]"))
                                ))
                            })?,
                            None => 1,
                        };
                        out.samples.push(ProfileSample {
                            time_unix_nano: s
                                .timestamps_unix_nano
                                .get(k)
                                .copied()
                                .unwrap_or(p.time_unix_nano),
                            service_name: service.clone(),
                            host_name: host.clone(),
                            pid,
                            tid,
                            comm: comm.to_string(),
                            kind,
                            stack_id: stack.stack_id,
                            value_nanos: value.saturating_mul(unit_ns),
                            label: label.to_string(),
                        });
                    }
                }
            }
        }
    }
    Ok(Batch::Profiles(out))
}

/// Interns values into a dictionary table, index 0 being the table's zero value.
struct Interner<K> {
    index: HashMap<K, i32>,
}

impl<K: std::hash::Hash + Eq> Interner<K> {
    fn new() -> Self {
        Self {
            index: HashMap::new(),
        }
    }

    fn get<T>(&mut self, key: K, table: &mut Vec<T>, make: impl FnOnce() -> T) -> i32 {
        *self.index.entry(key).or_insert_with(|| {
            table.push(make());
            (table.len() - 1) as i32
        })
    }
}

struct DictBuilder {
    d: ProfilesDictionary,
    strings: Interner<String>,
    functions: Interner<i32>,
    mappings: Interner<i32>,
    locations: Interner<(i32, i32, bool)>,
    attrs: Interner<(String, String)>,
    stacks: Interner<u64>,
}

impl DictBuilder {
    fn new() -> Self {
        let mut b = Self {
            d: ProfilesDictionary {
                mapping_table: vec![Mapping::default()],
                location_table: vec![Location::default()],
                function_table: vec![Function::default()],
                link_table: vec![Default::default()],
                string_table: Vec::new(),
                attribute_table: vec![KeyValueAndUnit::default()],
                stack_table: vec![Stack::default()],
            },
            strings: Interner::new(),
            functions: Interner::new(),
            mappings: Interner::new(),
            locations: Interner::new(),
            attrs: Interner::new(),
            stacks: Interner::new(),
        };
        b.string("");
        b
    }

    fn string(&mut self, s: &str) -> i32 {
        let owned = s.to_string();
        self.strings
            .get(owned.clone(), &mut self.d.string_table, || owned)
    }

    fn attr(&mut self, key: &str, value: AnyValue) -> i32 {
        let text = crate::any_value_to_string(&value);
        let key_strindex = self.string(key);
        self.attrs
            .get((key.to_string(), text), &mut self.d.attribute_table, || {
                KeyValueAndUnit {
                    key_strindex,
                    value: Some(value),
                    unit_strindex: 0,
                }
            })
    }

    fn location(&mut self, frame: &str, module: &str) -> i32 {
        let (name, kernel, module) = if let Some(f) = frame.strip_suffix(KERNEL_SUFFIX) {
            (
                f,
                true,
                if module.is_empty() {
                    KERNEL_MODULE
                } else {
                    module
                },
            )
        } else if let Some(f) = frame.strip_suffix(JIT_SUFFIX) {
            (f, false, JIT_MODULE)
        } else {
            (frame, false, module)
        };
        let name_i = self.string(name);
        let function_index = self
            .functions
            .get(name_i, &mut self.d.function_table, || Function {
                name_strindex: name_i,
                system_name_strindex: name_i,
                filename_strindex: 0,
                start_line: 0,
            });
        let mapping_index = if module.is_empty() {
            0
        } else {
            let file_i = self.string(module);
            self.mappings
                .get(file_i, &mut self.d.mapping_table, || Mapping {
                    filename_strindex: file_i,
                    ..Mapping::default()
                })
        };
        let frame_type = if kernel {
            Some(self.attr(FRAME_TYPE_ATTRIBUTE, string_value("kernel")))
        } else if module != JIT_MODULE && name != TRUNCATED_FRAME {
            Some(self.attr(FRAME_TYPE_ATTRIBUTE, string_value("native")))
        } else {
            None
        };
        self.locations.get(
            (function_index, mapping_index, kernel),
            &mut self.d.location_table,
            || Location {
                mapping_index,
                address: 0,
                lines: vec![Line {
                    function_index,
                    line: 0,
                    column: 0,
                }],
                attribute_indices: frame_type.into_iter().collect(),
            },
        )
    }

    fn stack(&mut self, st: &ProfileStack) -> i32 {
        if let Some(&i) = self.stacks.index.get(&st.stack_id) {
            return i;
        }
        // Leaf first on the wire; stored stacks are root first.
        let mut locations: Vec<i32> = st
            .frames
            .iter()
            .enumerate()
            .rev()
            .map(|(k, f)| {
                let module = st.modules.get(k).map(String::as_str).unwrap_or("");
                self.location(f, module)
            })
            .collect();
        if st.truncated {
            locations.push(self.location(TRUNCATED_FRAME, ""));
        }
        self.stacks
            .get(st.stack_id, &mut self.d.stack_table, || Stack {
                location_indices: locations,
            })
    }
}

fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

fn int_value(i: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(i)),
    }
}

fn key_value(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..KeyValue::default()
    }
}

/// Encodes stored samples and their stacks as one OTLP profiles export. Samples whose stack is
/// not in `batch.stacks` are left out (and counted in the second value).
pub fn profiles_to_otlp(batch: &ProfileBatch) -> (ExportProfilesServiceRequest, usize) {
    let stacks: HashMap<u64, &ProfileStack> =
        batch.stacks.iter().map(|s| (s.stack_id, s)).collect();
    let mut b = DictBuilder::new();
    let ns = b.string("nanoseconds");
    let cpu = b.string("cpu");
    let off_cpu = b.string("off_cpu");
    // (service, host, pid) → kind → (stack, tid, comm, label) → (values, timestamps)
    type ProcessKey<'a> = (&'a str, &'a str, u32);
    type SampleKey<'a> = (u64, u32, &'a str, &'a str);
    type Series = (Vec<i64>, Vec<u64>);
    type KindSamples<'a> = [Vec<(SampleKey<'a>, Series)>; 2];
    let mut groups: Vec<(ProcessKey<'_>, KindSamples<'_>)> = Vec::new();
    let mut group_index: HashMap<ProcessKey<'_>, usize> = HashMap::new();
    let mut sample_index: HashMap<(ProcessKey<'_>, usize, SampleKey<'_>), usize> = HashMap::new();
    let mut missing = 0;
    for s in &batch.samples {
        if !stacks.contains_key(&s.stack_id) {
            missing += 1;
            continue;
        }
        let g = (s.service_name.as_str(), s.host_name.as_str(), s.pid);
        let gi = *group_index.entry(g).or_insert_with(|| {
            groups.push((g, [Vec::new(), Vec::new()]));
            groups.len() - 1
        });
        let ki = usize::from(s.kind == ProfileKind::OffCpu);
        let key: SampleKey<'_> = (s.stack_id, s.tid, s.comm.as_str(), s.label.as_str());
        let list = &mut groups[gi].1[ki];
        let si = *sample_index.entry((g, ki, key)).or_insert_with(|| {
            list.push((key, (Vec::new(), Vec::new())));
            list.len() - 1
        });
        let series = &mut list[si].1;
        series
            .0
            .push(i64::try_from(s.value_nanos).unwrap_or(i64::MAX));
        series.1.push(s.time_unix_nano);
    }
    let mut resource_profiles = Vec::with_capacity(groups.len());
    for ((service, host, pid), kinds) in groups {
        let mut attributes = vec![key_value("service.name", string_value(service))];
        if !host.is_empty() {
            attributes.push(key_value("host.name", string_value(host)));
        }
        if pid != 0 {
            attributes.push(key_value("process.pid", int_value(i64::from(pid))));
        }
        let mut profiles = Vec::new();
        for (ki, samples) in kinds.into_iter().enumerate() {
            if samples.is_empty() {
                continue;
            }
            let (mut first, mut last) = (u64::MAX, 0);
            let mut out = Vec::with_capacity(samples.len());
            for ((stack_id, tid, comm, label), (values, timestamps)) in samples {
                for &t in &timestamps {
                    first = first.min(t);
                    last = last.max(t);
                }
                let mut attribute_indices = Vec::new();
                if tid != 0 {
                    attribute_indices.push(b.attr("thread.id", int_value(i64::from(tid))));
                }
                if !comm.is_empty() {
                    attribute_indices.push(b.attr("thread.name", string_value(comm)));
                }
                if !label.is_empty() {
                    attribute_indices.push(b.attr(LABEL_ATTRIBUTE, string_value(label)));
                }
                let stack_index = b.stack(stacks[&stack_id]);
                out.push(Sample {
                    stack_index,
                    attribute_indices,
                    link_index: 0,
                    values,
                    timestamps_unix_nano: timestamps,
                });
            }
            let type_strindex = if ki == 1 { off_cpu } else { cpu };
            profiles.push(Profile {
                sample_type: Some(ValueType {
                    type_strindex,
                    unit_strindex: ns,
                }),
                samples: out,
                time_unix_nano: first,
                duration_nano: last - first,
                period_type: Some(ValueType {
                    type_strindex: cpu,
                    unit_strindex: ns,
                }),
                // Rates differ between processes and boosts: every value is its own duration.
                period: 0,
                ..Profile::default()
            });
        }
        resource_profiles.push(ResourceProfiles {
            resource: Some(OtlpResource {
                attributes,
                ..OtlpResource::default()
            }),
            scope_profiles: vec![ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: "oxeye".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                profiles,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
    }
    (
        ExportProfilesServiceRequest {
            resource_profiles,
            dictionary: Some(b.d),
        },
        missing,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        t: u64,
        pid: u32,
        tid: u32,
        kind: ProfileKind,
        stack_id: u64,
        v: u64,
    ) -> ProfileSample {
        ProfileSample {
            time_unix_nano: t,
            service_name: "shop".into(),
            host_name: "h1".into(),
            pid,
            tid,
            comm: "worker".into(),
            kind,
            stack_id,
            value_nanos: v,
            label: if v > 100 {
                "high_traffic".into()
            } else {
                String::new()
            },
        }
    }

    fn stack(id: u64, frames: &[&str], truncated: bool) -> ProfileStack {
        ProfileStack {
            stack_id: id,
            first_seen_unix_nano: 1,
            service_name: "shop".into(),
            frames: frames.iter().map(|f| f.to_string()).collect(),
            modules: frames
                .iter()
                .map(|f| {
                    if f.ends_with("_[k]") {
                        "[kernel]".to_string()
                    } else if f.ends_with("_[j]") {
                        "[jit]".to_string()
                    } else {
                        "/bin/shop".to_string()
                    }
                })
                .collect(),
            truncated,
        }
    }

    type Row = (u64, u32, u32, &'static str, Vec<String>, bool, u64, String);

    /// Rows as a comparable multiset: (time, pid, tid, kind, frames, truncated, value, label).
    fn rows(b: &ProfileBatch) -> Vec<Row> {
        let stacks: HashMap<u64, &ProfileStack> =
            b.stacks.iter().map(|s| (s.stack_id, s)).collect();
        let mut v: Vec<_> = b
            .samples
            .iter()
            .map(|s| {
                let st = stacks[&s.stack_id];
                (
                    s.time_unix_nano,
                    s.pid,
                    s.tid,
                    s.kind.as_str(),
                    st.frames.clone(),
                    st.truncated,
                    s.value_nanos,
                    s.label.clone(),
                )
            })
            .collect();
        v.sort();
        v
    }

    fn original() -> ProfileBatch {
        ProfileBatch {
            samples: vec![
                sample(10, 7, 8, ProfileKind::Cpu, 1, 52),
                sample(11, 7, 8, ProfileKind::Cpu, 1, 52),
                sample(12, 7, 9, ProfileKind::Cpu, 2, 52),
                sample(13, 7, 9, ProfileKind::OffCpu, 3, 5000),
                sample(14, 70, 71, ProfileKind::Cpu, 1, 10),
            ],
            stacks: vec![
                stack(1, &["main", "work", "hot"], false),
                stack(2, &["js_fn_[j]", "leaf", "do_syscall_64_[k]"], true),
                stack(3, &["main", "wait", "schedule_[k]"], false),
            ],
        }
    }

    #[test]
    fn export_then_import_keeps_every_row() {
        let before = original();
        let (req, missing) = profiles_to_otlp(&before);
        assert_eq!(missing, 0);
        assert_eq!(req.resource_profiles.len(), 2, "one per process");
        let dict = req.dictionary.as_ref().unwrap();
        assert_eq!(dict.string_table[0], "");
        assert_eq!(dict.stack_table[0], Stack::default());
        // Through the wire format and back.
        let bytes = prost::Message::encode_to_vec(&req);
        let decoded = <ExportProfilesServiceRequest as prost::Message>::decode(&bytes[..]).unwrap();
        let Batch::Profiles(after) = profiles_from_otlp(decoded).unwrap() else {
            panic!("profiles expected")
        };
        assert_eq!(rows(&before), rows(&after));
        let kernel = after
            .stacks
            .iter()
            .find(|s| s.frames.last().is_some_and(|f| f == "do_syscall_64_[k]"))
            .unwrap();
        assert_eq!(kernel.modules.last().unwrap(), "[kernel]");
        assert!(
            after
                .samples
                .iter()
                .all(|s| s.host_name == "h1" && s.service_name == "shop")
        );
        assert!(after.samples.iter().all(|s| s.comm == "worker"));
    }

    #[test]
    fn json_round_trip_uses_the_official_field_names() {
        let (req, _) = profiles_to_otlp(&original());
        let json = serde_json::to_string(&req).unwrap();
        assert!(json.contains("\"resourceProfiles\""), "{json}");
        assert!(json.contains("\"stackTable\""), "{json}");
        let back: ExportProfilesServiceRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, req);
    }

    fn minimal(
        sample: Sample,
        dict: ProfilesDictionary,
        st: Option<ValueType>,
    ) -> ExportProfilesServiceRequest {
        ExportProfilesServiceRequest {
            resource_profiles: vec![ResourceProfiles {
                resource: Some(OtlpResource {
                    attributes: vec![
                        key_value("service.name", string_value("api")),
                        key_value("process.pid", int_value(42)),
                    ],
                    ..OtlpResource::default()
                }),
                scope_profiles: vec![ScopeProfiles {
                    scope: None,
                    profiles: vec![Profile {
                        sample_type: st,
                        samples: vec![sample],
                        time_unix_nano: 1_000,
                        period_type: Some(ValueType {
                            type_strindex: 1,
                            unit_strindex: 2,
                        }),
                        period: 50_000_000,
                        ..Profile::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
            dictionary: Some(dict),
        }
    }

    /// The OTel eBPF profiler's shape: counts of `samples`, each one period of `cpu` time, a
    /// location with inlined lines and one with no symbol.
    fn ebpf_profiler_dict() -> ProfilesDictionary {
        ProfilesDictionary {
            string_table: [
                "",
                "cpu",
                "nanoseconds",
                "samples",
                "count",
                "inner",
                "outer",
                "/usr/lib/libc.so.6",
            ]
            .map(String::from)
            .to_vec(),
            function_table: vec![
                Function::default(),
                Function {
                    name_strindex: 5,
                    ..Function::default()
                },
                Function {
                    name_strindex: 6,
                    ..Function::default()
                },
            ],
            mapping_table: vec![
                Mapping::default(),
                Mapping {
                    filename_strindex: 7,
                    ..Mapping::default()
                },
            ],
            location_table: vec![
                Location::default(),
                Location {
                    lines: vec![
                        Line {
                            function_index: 1,
                            ..Line::default()
                        },
                        Line {
                            function_index: 2,
                            ..Line::default()
                        },
                    ],
                    ..Location::default()
                },
                Location {
                    mapping_index: 1,
                    address: 0x1a2b,
                    ..Location::default()
                },
            ],
            stack_table: vec![
                Stack::default(),
                Stack {
                    location_indices: vec![2, 1],
                },
            ],
            ..ProfilesDictionary::default()
        }
    }

    fn samples_type() -> Option<ValueType> {
        Some(ValueType {
            type_strindex: 3,
            unit_strindex: 4,
        })
    }

    #[test]
    fn counts_weigh_one_period_and_lines_are_leaf_first() {
        let s = Sample {
            stack_index: 1,
            timestamps_unix_nano: vec![5, 6, 7],
            ..Sample::default()
        };
        let Batch::Profiles(b) =
            profiles_from_otlp(minimal(s, ebpf_profiler_dict(), samples_type())).unwrap()
        else {
            panic!()
        };
        assert_eq!(b.samples.len(), 3);
        assert!(
            b.samples
                .iter()
                .all(|s| s.value_nanos == 50_000_000 && s.pid == 42)
        );
        assert_eq!(b.samples[0].service_name, "api");
        assert_eq!(b.stacks.len(), 1);
        assert_eq!(b.stacks[0].frames, ["outer", "inner", "libc.so.6+0x1a2b"]);
        assert!(!b.stacks[0].truncated);
    }

    fn error_of(s: Sample, dict: ProfilesDictionary, st: Option<ValueType>) -> String {
        profiles_from_otlp(minimal(s, dict, st)).unwrap_err().0
    }

    #[test]
    fn bad_indices_and_shapes_are_named() {
        let e = error_of(
            Sample {
                stack_index: 9,
                values: vec![1],
                ..Sample::default()
            },
            ebpf_profiler_dict(),
            samples_type(),
        );
        assert_eq!(
            e,
            "resourceProfiles[0].scopeProfiles[0].profiles[0].samples[0].stackIndex: index 9 is out of range (dictionary.stackTable has 2 entries)"
        );
        let mut d = ebpf_profiler_dict();
        d.stack_table[1].location_indices.push(30);
        let e = error_of(
            Sample {
                stack_index: 1,
                values: vec![1],
                ..Sample::default()
            },
            d,
            samples_type(),
        );
        assert!(
            e.starts_with("dictionary.stackTable[1].locationIndices[2]: index 30 is out of range"),
            "{e}"
        );
        let mut d = ebpf_profiler_dict();
        d.function_table[2].name_strindex = 99;
        let e = error_of(
            Sample {
                stack_index: 1,
                values: vec![1],
                ..Sample::default()
            },
            d,
            samples_type(),
        );
        assert!(
            e.starts_with("dictionary.functionTable[2].nameStrindex: index 99"),
            "{e}"
        );
        let e = error_of(
            Sample {
                stack_index: 1,
                values: vec![1, 2],
                timestamps_unix_nano: vec![1],
                ..Sample::default()
            },
            ebpf_profiler_dict(),
            samples_type(),
        );
        assert!(e.contains("2 values but 1 timestampsUnixNano"), "{e}");
        let e = error_of(
            Sample {
                stack_index: 1,
                values: vec![-3],
                ..Sample::default()
            },
            ebpf_profiler_dict(),
            samples_type(),
        );
        assert!(e.ends_with("values[0]: -3 is negative"), "{e}");
        let e = error_of(
            Sample {
                stack_index: 1,
                ..Sample::default()
            },
            ebpf_profiler_dict(),
            samples_type(),
        );
        assert!(e.contains("needs values or timestampsUnixNano"), "{e}");
        let e = error_of(
            Sample {
                stack_index: 1,
                values: vec![1],
                ..Sample::default()
            },
            ebpf_profiler_dict(),
            None,
        );
        assert!(e.ends_with("sampleType: missing (oxeye stores cpu and off_cpu time profiles and must know which)"), "{e}");
        let mut d = ebpf_profiler_dict();
        d.string_table[3] = "alloc_space".into();
        let e = error_of(
            Sample {
                stack_index: 1,
                values: vec![1],
                ..Sample::default()
            },
            d,
            samples_type(),
        );
        assert!(e.contains("type \"alloc_space\""), "{e}");
    }
}
