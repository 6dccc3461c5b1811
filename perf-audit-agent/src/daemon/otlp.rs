//! `--otlp ENDPOINT`: every window goes to an OpenTelemetry collector (or
//! any OTLP profiles receiver: Grafana Pyroscope, the OpenTelemetry
//! Collector) as one `ExportProfilesServiceRequest` over gRPC, built with
//! the maintained generated types of the `opentelemetry-proto` crate
//! (profiles `v1development`, proto v1.10.0).
//!
//! Shape of a request (OTLP profiles are one sample type per profile):
//!
//! - one `ResourceProfiles` per process, with the resource attributes of
//!   the semantic conventions: `host.name`, `process.pid`,
//!   `process.executable.name`, `process.executable.path`, and when the
//!   cgroup says so `container.id` and `k8s.pod.uid`;
//! - in it one `ScopeProfiles` (scope `perf-audit`) with a CPU profile
//!   (`cpu`/`nanoseconds`: samples x period, period type `cpu`/`nanoseconds`
//!   at 1e9 / frequency) and, with `--off-cpu`, an off-CPU profile
//!   (`off_cpu`/`nanoseconds`: time blocked per stack);
//! - samples carry the thread name (`thread.name`) and a stack, leaf first;
//!   locations keep every inlined frame as a line (innermost first, as
//!   pprof), with file and line;
//! - one `ProfilesDictionary` shared by every profile of the request, each
//!   table starting with its zero value as the format requires, and no
//!   duplicates (items are interned by value).
//!
//! Bounded: a window is built process by process into the request (never
//! all windows at once), cut into several requests when it passes
//! [`MAX_REQUEST_BYTES`] (the 4 MiB a gRPC server accepts by default); at
//! most one window is in flight, and a window that finds the previous one
//! still in flight is dropped and counted: a slow collector never grows our
//! memory or delays sampling. Failures are counted in `/metrics` and logged,
//! one line per window.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::profiles::v1development::{ExportProfilesServiceRequest, profiles_service_client::ProfilesServiceClient},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    profiles::v1development::{
        Function, KeyValueAndUnit, Line, Link, Location, Mapping, Profile, ProfilesDictionary, ResourceProfiles, Sample,
        ScopeProfiles, Stack, ValueType,
    },
    resource::v1::Resource,
};

use super::model::ProcessWindow;

/// A request is cut before it reaches this many bytes (estimated while it
/// is built): gRPC servers refuse messages over 4 MiB unless configured
/// otherwise (grpc-go's and so the OpenTelemetry Collector's default), and
/// the estimate stays well under that.
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;
/// One export (all the requests of a window) must finish within this.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A location by value: (mapping index, address, lines as (function, line)).
type LocationKey = (i32, u64, Vec<(i32, i64)>);

/// Builds the requests of one window, process by process.
pub struct RequestBuilder {
    host: String,
    dictionary: ProfilesDictionary,
    strings: HashMap<String, i32>,
    mappings: HashMap<(u64, u64, u64, i32), i32>,
    functions: HashMap<(i32, i32), i32>,
    locations: HashMap<LocationKey, i32>,
    stacks: HashMap<Vec<i32>, i32>,
    attributes: HashMap<(i32, String), i32>,
    resources: Vec<ResourceProfiles>,
    /// Estimated encoded size so far.
    bytes: usize,
    done: Vec<ExportProfilesServiceRequest>,
}

fn string_value(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }), ..Default::default() }
}

fn nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The resource attributes of a window's process.
pub fn resource_attributes(window: &ProcessWindow, host: &str) -> Vec<KeyValue> {
    let p = &window.process;
    let mut attributes = vec![
        string_value("host.name", host),
        KeyValue {
            key: "process.pid".into(),
            value: Some(AnyValue { value: Some(Value::IntValue(i64::from(p.pid))) }),
            ..Default::default()
        },
        string_value("process.executable.name", &p.name),
    ];
    if let Some(exe) = &p.exe {
        attributes.push(string_value("process.executable.path", exe));
    }
    if let Some(id) = &p.container_id {
        attributes.push(string_value("container.id", id));
    }
    if let Some(uid) = &p.pod_uid {
        attributes.push(string_value("k8s.pod.uid", uid));
    }
    attributes
}

impl RequestBuilder {
    pub fn new(host: &str) -> RequestBuilder {
        let mut builder = RequestBuilder {
            host: host.to_string(),
            dictionary: ProfilesDictionary::default(),
            strings: HashMap::new(),
            mappings: HashMap::new(),
            functions: HashMap::new(),
            locations: HashMap::new(),
            stacks: HashMap::new(),
            attributes: HashMap::new(),
            resources: Vec::new(),
            bytes: 0,
            done: Vec::new(),
        };
        builder.reset_dictionary();
        builder
    }

    /// Every table starts with its zero value (index 0 means "none").
    fn reset_dictionary(&mut self) {
        self.dictionary = ProfilesDictionary {
            mapping_table: vec![Mapping::default()],
            location_table: vec![Location::default()],
            function_table: vec![Function::default()],
            link_table: vec![Link::default()],
            string_table: vec![String::new()],
            attribute_table: vec![KeyValueAndUnit::default()],
            stack_table: vec![Stack::default()],
        };
        self.strings = HashMap::from([(String::new(), 0)]);
        self.mappings.clear();
        self.functions.clear();
        self.locations.clear();
        self.stacks.clear();
        self.attributes.clear();
        self.bytes = 0;
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(i) = self.strings.get(s) {
            return *i;
        }
        let i = self.dictionary.string_table.len() as i32;
        self.dictionary.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        self.bytes += s.len() + 3;
        i
    }

    fn thread_attribute(&mut self, thread: &str) -> i32 {
        let key = self.string("thread.name");
        if let Some(i) = self.attributes.get(&(key, thread.to_string())) {
            return *i;
        }
        let i = self.dictionary.attribute_table.len() as i32;
        self.dictionary.attribute_table.push(KeyValueAndUnit {
            key_strindex: key,
            value: Some(AnyValue { value: Some(Value::StringValue(thread.to_string())) }),
            unit_strindex: 0,
        });
        self.attributes.insert((key, thread.to_string()), i);
        self.bytes += thread.len() + 12;
        i
    }

    /// Adds one process's window (its CPU profile, and its off-CPU profile
    /// when it was recorded).
    pub fn add(&mut self, window: &ProcessWindow) {
        if self.bytes >= MAX_REQUEST_BYTES {
            self.cut();
        }
        // Window index -> dictionary index.
        let mut mapping_ids = Vec::with_capacity(window.mappings.len());
        for m in &window.mappings {
            let filename = self.string(&m.path.to_string_lossy());
            let key = (m.start, m.end, m.offset, filename);
            let id = match self.mappings.get(&key) {
                Some(id) => *id,
                None => {
                    let id = self.dictionary.mapping_table.len() as i32;
                    self.dictionary.mapping_table.push(Mapping {
                        memory_start: m.start,
                        memory_limit: m.end,
                        file_offset: m.offset,
                        filename_strindex: filename,
                        attribute_indices: Vec::new(),
                    });
                    self.mappings.insert(key, id);
                    self.bytes += 32;
                    id
                }
            };
            mapping_ids.push(id);
        }
        let mut location_ids = Vec::with_capacity(window.locations.len());
        for loc in &window.locations {
            // Innermost inlined frame first, the function they were inlined
            // into last (the window keeps them outermost first).
            let mut lines = Vec::with_capacity(loc.frames.len());
            for f in loc.frames.iter().rev() {
                let name = self.string(&f.function);
                let file = self.string(f.file.as_deref().unwrap_or(""));
                let function = match self.functions.get(&(name, file)) {
                    Some(id) => *id,
                    None => {
                        let id = self.dictionary.function_table.len() as i32;
                        self.dictionary.function_table.push(Function {
                            name_strindex: name,
                            system_name_strindex: name,
                            filename_strindex: file,
                            start_line: 0,
                        });
                        self.functions.insert((name, file), id);
                        self.bytes += 16;
                        id
                    }
                };
                lines.push((function, f.line.map(i64::from).unwrap_or(0)));
            }
            let mapping = loc.mapping.map(|m| mapping_ids[m]).unwrap_or(0);
            let key = (mapping, loc.address, lines);
            let id = match self.locations.get(&key) {
                Some(id) => *id,
                None => {
                    let id = self.dictionary.location_table.len() as i32;
                    self.dictionary.location_table.push(Location {
                        mapping_index: mapping,
                        address: loc.address,
                        lines: key.2.iter().map(|(f, l)| Line { function_index: *f, line: *l, column: 0 }).collect(),
                        attribute_indices: Vec::new(),
                    });
                    self.bytes += 16 + 8 * key.2.len();
                    self.locations.insert(key, id);
                    id
                }
            };
            location_ids.push(id);
        }

        let period = window.period_ns();
        let mut cpu = Vec::new();
        let mut off_cpu = Vec::new();
        for s in &window.stacks {
            let ids: Vec<i32> = s.locations.iter().map(|l| location_ids[*l]).collect();
            let stack = match self.stacks.get(&ids) {
                Some(id) => *id,
                None => {
                    let id = self.dictionary.stack_table.len() as i32;
                    self.bytes += 4 + 4 * ids.len();
                    self.dictionary.stack_table.push(Stack { location_indices: ids.clone() });
                    self.stacks.insert(ids, id);
                    id
                }
            };
            let thread = self.thread_attribute(&s.thread);
            let sample = |value: i64| Sample {
                stack_index: stack,
                attribute_indices: vec![thread],
                link_index: 0,
                values: vec![value],
                timestamps_unix_nano: Vec::new(),
            };
            if s.count > 0 {
                cpu.push(sample(s.count as i64 * period));
            }
            if s.off_cpu_ns > 0 {
                off_cpu.push(sample(s.off_cpu_ns as i64));
            }
            self.bytes += 16 * (usize::from(s.count > 0) + usize::from(s.off_cpu_ns > 0));
        }

        let cpu_type = self.string("cpu");
        let off_cpu_type = self.string("off_cpu");
        let ns = self.string("nanoseconds");
        let start = nanos(window.start);
        let duration = nanos(window.end).saturating_sub(start);
        let profile = |sample_type: i32, samples: Vec<Sample>| Profile {
            sample_type: Some(ValueType { type_strindex: sample_type, unit_strindex: ns }),
            samples,
            time_unix_nano: start,
            duration_nano: duration,
            period_type: Some(ValueType { type_strindex: cpu_type, unit_strindex: ns }),
            period: if sample_type == cpu_type { period } else { 0 },
            ..Default::default()
        };
        let mut profiles = vec![profile(cpu_type, cpu)];
        if window.has_off_cpu() {
            profiles.push(profile(off_cpu_type, off_cpu));
        }
        self.resources.push(ResourceProfiles {
            resource: Some(Resource { attributes: resource_attributes(window, &self.host), ..Default::default() }),
            scope_profiles: vec![ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: "perf-audit".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                profiles,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
        self.bytes += 200;
    }

    /// Closes the request being built and starts a new dictionary.
    fn cut(&mut self) {
        if self.resources.is_empty() {
            return;
        }
        let dictionary = std::mem::take(&mut self.dictionary);
        self.done.push(ExportProfilesServiceRequest {
            resource_profiles: std::mem::take(&mut self.resources),
            dictionary: Some(dictionary),
        });
        self.reset_dictionary();
    }

    /// The window's requests (none when no process had samples).
    pub fn finish(mut self) -> Vec<ExportProfilesServiceRequest> {
        self.cut();
        self.done
    }
}

#[derive(Default)]
pub struct ExportStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// The gRPC exporter: at most one window in flight.
pub struct Exporter {
    endpoint: String,
    client: ProfilesServiceClient<tonic::transport::Channel>,
    busy: Arc<AtomicBool>,
    pub stats: Arc<ExportStats>,
}

/// The node's name for `host.name` (the kernel's hostname; a DaemonSet on
/// the host network sees the node's).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

impl Exporter {
    /// A lazily connected client: an unreachable collector is an export
    /// failure later, never a start-up error.
    pub fn new(endpoint: &hyper::Uri) -> Result<Exporter, String> {
        let text = endpoint.to_string();
        let channel = tonic::transport::Endpoint::from_shared(text.clone())
            .map_err(|e| format!("--otlp `{text}`: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(EXPORT_TIMEOUT)
            .connect_lazy();
        Ok(Exporter {
            endpoint: text.trim_end_matches('/').to_string(),
            client: ProfilesServiceClient::new(channel).max_decoding_message_size(1024 * 1024),
            busy: Arc::default(),
            stats: Arc::default(),
        })
    }

    /// Starts exporting one window's requests; returns at once. The window
    /// is dropped (and counted) while the previous one is still in flight.
    pub fn export(&self, requests: Vec<ExportProfilesServiceRequest>) {
        if requests.is_empty() {
            return;
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "perf-audit: OTLP window dropped: the previous export to {} is still in flight (a slow collector; counted in perf_audit_otlp_exports_total{{result=\"dropped\"}})",
                self.endpoint
            );
            return;
        }
        let mut client = self.client.clone();
        let busy = self.busy.clone();
        let stats = self.stats.clone();
        let endpoint = self.endpoint.clone();
        tokio::spawn(async move {
            let mut failure = None;
            for request in requests {
                let call = tokio::time::timeout(EXPORT_TIMEOUT, client.export(request)).await;
                match call {
                    Ok(Ok(response)) => {
                        let rejected = response.into_inner().partial_success.map(|p| p.rejected_profiles).unwrap_or(0);
                        if rejected > 0 {
                            failure = Some(format!("the collector rejected {rejected} profiles"));
                        }
                    }
                    Ok(Err(status)) => {
                        failure = Some(one_line(&status));
                        break;
                    }
                    Err(_) => {
                        failure = Some(format!("no answer within {}s", EXPORT_TIMEOUT.as_secs()));
                        break;
                    }
                }
            }
            match failure {
                None => {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                }
                Some(why) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "perf-audit: OTLP export to {endpoint} failed: {why}; check that an OTLP gRPC receiver listens there (--otlp)"
                    );
                }
            }
            busy.store(false, Ordering::Release);
        });
    }

    /// Waits (up to `timeout`) for the export in flight: used at shutdown.
    pub async fn flush(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.busy.load(Ordering::Acquire) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A gRPC status as one line: its code and message, and the transport's
/// reason when there is one (connection refused...).
fn one_line(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        let reason = s.to_string();
        if !text.contains(&reason) {
            text.push_str(": ");
            text.push_str(&reason);
        }
        source = s.source();
    }
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::{super::model::test_support::{window, window_with_off_cpu}, *};

    fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_window_is_one_resource_with_its_attributes_and_a_cpu_profile() {
        let mut b = RequestBuilder::new("node-1");
        b.add(&window());
        let requests = b.finish();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        let d = r.dictionary.as_ref().unwrap();
        assert_eq!(d.string_table[0], "");
        assert_eq!((d.mapping_table[0].clone(), d.location_table[0].clone()), (Mapping::default(), Location::default()));
        assert_eq!((d.function_table[0], d.stack_table[0].clone()), (Function::default(), Stack::default()));
        assert_eq!(r.resource_profiles.len(), 1);
        let attrs = &r.resource_profiles[0].resource.as_ref().unwrap().attributes;
        assert_eq!(attribute(attrs, "host.name"), Some(&Value::StringValue("node-1".into())));
        assert_eq!(attribute(attrs, "process.pid"), Some(&Value::IntValue(42)));
        assert_eq!(attribute(attrs, "process.executable.name"), Some(&Value::StringValue("svc".into())));
        assert_eq!(attribute(attrs, "process.executable.path"), Some(&Value::StringValue("/usr/bin/svc".into())));
        assert_eq!(attribute(attrs, "container.id"), Some(&Value::StringValue("ab".repeat(32))));
        assert_eq!(attribute(attrs, "k8s.pod.uid"), Some(&Value::StringValue("9d4e2c1b-7a6f-4e3d-8c2b-1a0f9e8d7c6b".into())));
        let scope = &r.resource_profiles[0].scope_profiles[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "perf-audit");
        assert_eq!(scope.profiles.len(), 1, "no off-CPU profile without --off-cpu");
        let p = &scope.profiles[0];
        let s = |i: i32| d.string_table[i as usize].as_str();
        let t = p.sample_type.as_ref().unwrap();
        assert_eq!((s(t.type_strindex), s(t.unit_strindex)), ("cpu", "nanoseconds"));
        assert_eq!(p.period, 52_631_578);
        assert_eq!(p.duration_nano, 60_000_000_000);
        assert_eq!(p.samples[0].values, vec![3 * 52_631_578]);
        // hot <- work (+ mix inlined) <- main, leaf first.
        let stack = &d.stack_table[p.samples[0].stack_index as usize];
        let names: Vec<Vec<&str>> = stack
            .location_indices
            .iter()
            .map(|l| {
                d.location_table[*l as usize]
                    .lines
                    .iter()
                    .map(|line| s(d.function_table[line.function_index as usize].name_strindex))
                    .collect()
            })
            .collect();
        assert_eq!(names, vec![vec!["svc::hot"], vec!["svc::mix", "svc::work"], vec!["svc::main"]]);
        let thread = &d.attribute_table[p.samples[0].attribute_indices[0] as usize];
        assert_eq!(s(thread.key_strindex), "thread.name");
        let location = &d.location_table[stack.location_indices[0] as usize];
        assert_eq!(s(d.mapping_table[location.mapping_index as usize].filename_strindex), "/usr/bin/svc");
    }

    #[test]
    fn off_cpu_is_a_second_profile_and_the_dictionary_is_shared() {
        let mut b = RequestBuilder::new("node-1");
        b.add(&window_with_off_cpu());
        let mut other = window();
        other.process.pid = 43;
        b.add(&other);
        let requests = b.finish();
        assert_eq!(requests.len(), 1, "two processes, one request");
        let r = &requests[0];
        let d = r.dictionary.as_ref().unwrap();
        assert_eq!(r.resource_profiles.len(), 2);
        let profiles = &r.resource_profiles[0].scope_profiles[0].profiles;
        let s = |i: i32| d.string_table[i as usize].as_str();
        let types: Vec<&str> = profiles.iter().map(|p| s(p.sample_type.as_ref().unwrap().type_strindex)).collect();
        assert_eq!(types, vec!["cpu", "off_cpu"]);
        assert_eq!(profiles[1].samples.len(), 1);
        assert_eq!(profiles[1].samples[0].values, vec![7_000_000]);
        // The same functions and stacks of both processes are interned once.
        let names: Vec<&str> = d.function_table.iter().skip(1).map(|f| s(f.name_strindex)).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "{names:?}");
        assert_eq!(d.stack_table.len(), 1 + 3, "zero value + three distinct stacks");
        // It encodes and decodes with the same generated types.
        let bytes = r.encode_to_vec();
        assert_eq!(&ExportProfilesServiceRequest::decode(&bytes[..]).unwrap(), r);
    }

    #[test]
    fn big_windows_are_cut_into_requests_under_the_limit() {
        let mut b = RequestBuilder::new("node-1");
        let mut w = window();
        // Many distinct stacks: each process's own long names.
        for pid in 0..40 {
            w.process.pid = pid;
            for (i, loc) in w.locations.iter_mut().enumerate() {
                loc.frames[0].function = format!("svc::f{pid}_{i}_{}", "x".repeat(30_000));
            }
            b.add(&w);
        }
        let requests = b.finish();
        assert!(requests.len() >= 2, "{}", requests.len());
        assert_eq!(requests.iter().map(|r| r.resource_profiles.len()).sum::<usize>(), 40);
        for r in &requests {
            assert!(r.encoded_len() < 4 * 1024 * 1024, "{}", r.encoded_len());
            // Each request's dictionary is its own: every index resolves.
            let d = r.dictionary.as_ref().unwrap();
            for rp in &r.resource_profiles {
                for s in &rp.scope_profiles[0].profiles[0].samples {
                    assert!((s.stack_index as usize) < d.stack_table.len());
                }
            }
        }
    }
}
