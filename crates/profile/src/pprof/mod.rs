//! pprof output: gzip-compressed `profile.proto`, as `go tool pprof`, Pyroscope, Parca and
//! Grafana read it.

mod proto;

use std::collections::HashMap;
use std::io::Write;

use prost::Message;

pub use proto::Profile as PprofProfile;

use crate::aggregate::{ProfileKind, StackAggregate, StackTable};
use crate::folded::TRUNCATED_FRAME;
use crate::frame::{Frame, FrameKind};

/// Facts about the profile as a whole that the samples do not carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PprofMeta {
    /// Start of the profiled range, Unix nanoseconds.
    pub time_unix_ns: u64,
    pub duration_ns: u64,
    /// Sampling period in nanoseconds (on-CPU); 0 when not periodic (off-CPU).
    pub period_ns: u64,
}

/// The uncompressed protobuf message, for callers that embed it (OTLP) or inspect it (tests).
pub fn to_pprof_message(
    stacks: &StackTable,
    aggregate: &StackAggregate,
    meta: PprofMeta,
) -> PprofProfile {
    let mut builder = Builder::default();
    let (samples_type, value_type) = match aggregate.kind {
        ProfileKind::Cpu => ("samples", "cpu"),
        ProfileKind::OffCpu => ("samples", "off_cpu"),
    };
    let count = builder.string("count");
    let nanoseconds = builder.string("nanoseconds");
    let sample_type = vec![
        proto::ValueType {
            r#type: builder.string(samples_type),
            unit: count,
        },
        proto::ValueType {
            r#type: builder.string(value_type),
            unit: nanoseconds,
        },
    ];
    let default_sample_type = sample_type[1].r#type;
    let period_type = proto::ValueType {
        r#type: sample_type[1].r#type,
        unit: nanoseconds,
    };
    let truncated = Frame::new(FrameKind::User, TRUNCATED_FRAME, "");
    let mut samples = Vec::new();
    for (id, totals) in aggregate.sorted() {
        let Some(stack) = stacks.get(id) else {
            continue;
        };
        let mut location_id: Vec<u64> = stack.frames.iter().map(|f| builder.location(f)).collect();
        if stack.truncated {
            location_id.push(builder.location(&truncated));
        }
        samples.push(proto::Sample {
            location_id,
            value: vec![
                saturating_i64(totals.samples),
                saturating_i64(totals.value_ns),
            ],
            label: Vec::new(),
        });
    }
    proto::Profile {
        sample_type,
        sample: samples,
        mapping: builder.mappings,
        location: builder.locations,
        function: builder.functions,
        string_table: builder.strings,
        time_nanos: saturating_i64(meta.time_unix_ns),
        duration_nanos: saturating_i64(meta.duration_ns),
        period_type: Some(period_type),
        period: saturating_i64(meta.period_ns),
        default_sample_type,
        ..Default::default()
    }
}

/// The profile as gzip-compressed protobuf, the form `go tool pprof` opens.
pub fn to_pprof(stacks: &StackTable, aggregate: &StackAggregate, meta: PprofMeta) -> Vec<u8> {
    let message = to_pprof_message(stacks, aggregate, meta).encode_to_vec();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = gzip.write_all(&message);
    gzip.finish().unwrap_or_default()
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_index: HashMap<String, i64>,
    functions: Vec<proto::Function>,
    function_index: HashMap<(i64, i64), u64>,
    mappings: Vec<proto::Mapping>,
    mapping_index: HashMap<i64, u64>,
    locations: Vec<proto::Location>,
    location_index: HashMap<Frame, u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if self.strings.is_empty() {
            self.strings.push(String::new());
            self.string_index.insert(String::new(), 0);
        }
        if let Some(&index) = self.string_index.get(s) {
            return index;
        }
        let index = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_index.insert(s.to_string(), index);
        index
    }

    fn function(&mut self, frame: &Frame) -> u64 {
        let name = self.string(&frame.function);
        let file = self.string(frame.file.as_deref().unwrap_or(""));
        if let Some(&id) = self.function_index.get(&(name, file)) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        self.functions.push(proto::Function {
            id,
            name,
            system_name: name,
            filename: file,
            start_line: 0,
        });
        self.function_index.insert((name, file), id);
        id
    }

    fn mapping(&mut self, module: &str) -> u64 {
        let filename = self.string(module);
        if let Some(&id) = self.mapping_index.get(&filename) {
            return id;
        }
        let id = self.mappings.len() as u64 + 1;
        // Names are resolved already: has_functions stops pprof from symbolizing again.
        self.mappings.push(proto::Mapping {
            id,
            filename,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
            ..Default::default()
        });
        self.mapping_index.insert(filename, id);
        id
    }

    /// One location per distinct frame; inlined frames get their own location so each shows
    /// in `-top` under its own name.
    fn location(&mut self, frame: &Frame) -> u64 {
        if let Some(&id) = self.location_index.get(frame) {
            return id;
        }
        let function_id = self.function(frame);
        let mapping_id = if frame.module.is_empty() {
            0
        } else {
            self.mapping(&frame.module)
        };
        let id = self.locations.len() as u64 + 1;
        self.locations.push(proto::Location {
            id,
            mapping_id,
            address: 0,
            line: vec![proto::Line {
                function_id,
                line: i64::from(frame.line.unwrap_or(0)),
                column: 0,
            }],
            is_folded: false,
        });
        self.location_index.insert(frame.clone(), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::frame::Stack;

    fn sample_profile() -> (StackTable, StackAggregate) {
        let mut stacks = StackTable::new();
        let mut aggregate = StackAggregate::new(ProfileKind::Cpu);
        let frame = |name: &str| Frame::new(FrameKind::User, name, "/bin/app");
        let hot = stacks.insert(Stack {
            frames: vec![frame("hot"), frame("main")],
            truncated: false,
        });
        let cut = stacks.insert(Stack {
            frames: vec![frame("hot")],
            truncated: true,
        });
        aggregate.add(hot, 100);
        aggregate.add(hot, 100);
        aggregate.add(cut, 50);
        (stacks, aggregate)
    }

    #[test]
    fn pprof_dedupes_strings_functions_and_locations() {
        let (stacks, aggregate) = sample_profile();
        let meta = PprofMeta {
            time_unix_ns: 1_700_000_000_000_000_000,
            duration_ns: 10_000_000_000,
            period_ns: 52_631_578,
        };
        let profile = to_pprof_message(&stacks, &aggregate, meta);
        let s = |i: i64| profile.string_table[i as usize].as_str();
        assert_eq!(profile.string_table[0], "");
        assert_eq!(profile.sample.len(), 2);
        // "hot" appears in both stacks but is one function and one location.
        assert_eq!(profile.function.len(), 3);
        assert_eq!(profile.location.len(), 3);
        assert_eq!(profile.sample[0].value, vec![2, 200]);
        assert_eq!(profile.sample[1].value, vec![1, 50]);
        let names: Vec<&str> = profile.sample[1]
            .location_id
            .iter()
            .map(|id| {
                let location = &profile.location[*id as usize - 1];
                s(profile.function[location.line[0].function_id as usize - 1].name)
            })
            .collect();
        assert_eq!(names, ["hot", "[truncated]"]);
        assert_eq!(s(profile.sample_type[1].r#type), "cpu");
        assert_eq!(s(profile.sample_type[1].unit), "nanoseconds");
        assert_eq!(profile.default_sample_type, profile.sample_type[1].r#type);
        assert_eq!(profile.period, 52_631_578);
    }

    #[test]
    fn pprof_output_is_gzip_of_the_message() {
        let (stacks, aggregate) = sample_profile();
        let bytes = to_pprof(&stacks, &aggregate, PprofMeta::default());
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut raw)
            .unwrap();
        let decoded = PprofProfile::decode(&raw[..]).unwrap();
        assert_eq!(
            decoded,
            to_pprof_message(&stacks, &aggregate, PprofMeta::default())
        );
    }
}
