//! pprof encoding of a [`ProcessWindow`]: the `profile.proto` message set
//! (github.com/google/pprof, `perftools.profiles`) written by hand with
//! prost's derive, so building needs no `protoc`; then gzip, as every pprof
//! consumer expects. Deterministic: same window, same bytes.

use std::{collections::HashMap, io::Write as _};

use prost::Message as _;

use super::model::{ProcessWindow, WindowKind};

/// `perftools.profiles` messages; field numbers are those of profile.proto
/// (pinned by a wire-bytes test below).
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// String table with index 0 = "" as the format requires.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// The profile message of one window.
pub fn to_profile(window: &ProcessWindow) -> proto::Profile {
    let mut strings = Strings::new();
    // samples/count and cpu/nanoseconds (the CPU profile's usual pair,
    // cpu the default); with off-CPU a third, off_cpu/nanoseconds, which
    // is 0 for stacks only seen on the CPU and vice versa.
    let mut sample_types = vec![
        proto::ValueType { r#type: strings.get("samples"), unit: strings.get("count") },
        proto::ValueType { r#type: strings.get("cpu"), unit: strings.get("nanoseconds") },
    ];
    if window.kind == WindowKind::CpuAndOffCpu {
        sample_types.push(proto::ValueType { r#type: strings.get("off_cpu"), unit: strings.get("nanoseconds") });
    }
    let period_type = proto::ValueType { r#type: strings.get("cpu"), unit: strings.get("nanoseconds") };

    let mappings: Vec<proto::Mapping> = window
        .mappings
        .iter()
        .enumerate()
        .map(|(i, m)| proto::Mapping {
            id: i as u64 + 1,
            memory_start: m.start,
            memory_limit: m.end,
            file_offset: m.offset,
            filename: strings.get(&m.path.to_string_lossy()),
            build_id: 0,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        })
        .collect();

    let mut functions: Vec<proto::Function> = Vec::new();
    let mut function_ids: HashMap<(String, Option<String>), u64> = HashMap::new();
    let mut locations = Vec::with_capacity(window.locations.len());
    for (i, loc) in window.locations.iter().enumerate() {
        // pprof: line[0] is the innermost inlined function, the last one
        // the function they were all inlined into.
        let lines = loc
            .frames
            .iter()
            .rev()
            .map(|f| {
                let key = (f.function.clone(), f.file.clone());
                let id = match function_ids.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = functions.len() as u64 + 1;
                        let name = strings.get(&f.function);
                        functions.push(proto::Function {
                            id,
                            name,
                            system_name: name,
                            filename: strings.get(f.file.as_deref().unwrap_or("")),
                            start_line: 0,
                        });
                        function_ids.insert(key, id);
                        id
                    }
                };
                proto::Line { function_id: id, line: f.line.map(i64::from).unwrap_or(0), column: 0 }
            })
            .collect();
        locations.push(proto::Location {
            id: i as u64 + 1,
            mapping_id: loc.mapping.map(|m| m as u64 + 1).unwrap_or(0),
            address: loc.address,
            line: lines,
            is_folded: false,
        });
    }

    let period = window.period_ns();
    let thread_key = strings.get("thread");
    let samples = window
        .stacks
        .iter()
        .map(|s| proto::Sample {
            location_id: s.locations.iter().map(|l| *l as u64 + 1).collect(),
            value: if window.kind == WindowKind::CpuAndOffCpu {
                vec![s.count as i64, s.count as i64 * period, s.off_cpu_ns as i64]
            } else {
                vec![s.count as i64, s.count as i64 * period]
            },
            label: vec![proto::Label { key: thread_key, str: strings.get(&s.thread), num: 0, num_unit: 0 }],
        })
        .collect();

    let nanos = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
    };
    let comment = vec![strings.get(&format!(
        "perf-audit daemon: pid {} ({}){}{}",
        window.process.pid,
        window.process.name,
        window.process.container_id.as_deref().map(|c| format!(", container {c}")).unwrap_or_default(),
        window.process.pod_uid.as_deref().map(|p| format!(", pod {p}")).unwrap_or_default(),
    ))];
    let default_sample_type = sample_types[1].r#type;
    proto::Profile {
        sample_type: sample_types,
        sample: samples,
        mapping: mappings,
        location: locations,
        function: functions,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: nanos(window.start),
        duration_nanos: nanos(window.end) - nanos(window.start),
        period_type: Some(period_type),
        period,
        comment,
        default_sample_type,
        string_table: strings.table,
    }
}

/// The gzip-compressed encoded profile (what `go tool pprof` reads).
pub fn encode_gzip(window: &ProcessWindow) -> Vec<u8> {
    let bytes = to_profile(window).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 3 + 64), flate2::Compression::default());
    gz.write_all(&bytes).expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::{super::model::test_support::window, *};

    fn decode(bytes: &[u8]) -> proto::Profile {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut raw).unwrap();
        proto::Profile::decode(&raw[..]).unwrap()
    }

    #[test]
    fn sample_types_values_and_inlined_lines() {
        let p = decode(&encode_gzip(&window()));
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        let types: Vec<(&str, &str)> = p.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
        assert_eq!(types, vec![("samples", "count"), ("cpu", "nanoseconds")]);
        assert_eq!(p.period, 52_631_578);
        assert_eq!(p.duration_nanos, 60_000_000_000);
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.sample[0].value, vec![3, 3 * 52_631_578]);
        // Leaf first: hot, work(+mix), main.
        assert_eq!(p.sample[0].location_id, vec![3, 2, 1]);
        let loc = &p.location[1];
        assert_eq!((loc.mapping_id, loc.address), (1, 0x1200));
        let names: Vec<&str> =
            loc.line.iter().map(|l| s(p.function[l.function_id as usize - 1].name)).collect();
        assert_eq!(names, vec!["svc::mix", "svc::work"], "innermost inlined first");
        assert_eq!(loc.line[0].line, 30);
        let f = &p.function[0];
        assert_eq!((s(f.name), s(f.filename)), ("svc::main", "/src/svc/src/main.rs"));
        assert_eq!(s(p.mapping[0].filename), "/usr/bin/svc");
        assert_eq!(s(p.sample[0].label[0].key), "thread");
        assert!(p.comment.iter().any(|c| s(*c).contains("pod 9d4e2c1b")));
    }

    #[test]
    fn off_cpu_is_a_third_sample_type() {
        let p = decode(&encode_gzip(&super::super::model::test_support::window_with_off_cpu()));
        let s = |i: i64| p.string_table[i as usize].as_str();
        let types: Vec<(&str, &str)> = p.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
        assert_eq!(types, vec![("samples", "count"), ("cpu", "nanoseconds"), ("off_cpu", "nanoseconds")]);
        assert_eq!(s(p.sample_type[p.sample_type.len() - 1].r#type), "off_cpu");
        assert_eq!(s(p.default_sample_type), "cpu");
        assert!(p.sample.iter().all(|x| x.value.len() == 3));
        let blocked: Vec<&proto::Sample> = p.sample.iter().filter(|x| x.value[2] > 0).collect();
        assert_eq!(blocked.len(), 1);
        assert_eq!(blocked[0].value, vec![0, 0, 7_000_000]);
        // Leaf first: nap, then main.
        let leaf = &p.location[blocked[0].location_id[0] as usize - 1];
        assert_eq!(s(p.function[leaf.line[0].function_id as usize - 1].name), "svc::nap");
    }

    #[test]
    fn encoding_is_deterministic() {
        assert_eq!(encode_gzip(&window()), encode_gzip(&window()));
    }

    #[test]
    fn field_numbers_match_profile_proto_on_the_wire() {
        // string_table is field 6 (tag 0x32), period field 12 (varint, tag 0x60),
        // sample_type field 1 (tag 0x0a), time_nanos field 9 (tag 0x48).
        let p = proto::Profile {
            string_table: vec!["".into()],
            period: 5,
            sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
            time_nanos: 7,
            ..Default::default()
        };
        assert_eq!(p.encode_to_vec(), vec![0x0a, 0x04, 0x08, 0x01, 0x10, 0x02, 0x32, 0x00, 0x48, 0x07, 0x60, 0x05]);
        let loc = proto::Location { id: 1, mapping_id: 2, address: 3, line: vec![proto::Line { function_id: 4, line: 5, column: 0 }], is_folded: false };
        assert_eq!(loc.encode_to_vec(), vec![0x08, 1, 0x10, 2, 0x18, 3, 0x22, 0x04, 0x08, 4, 0x10, 5]);
    }
}
