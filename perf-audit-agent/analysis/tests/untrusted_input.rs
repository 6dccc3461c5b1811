//! The stable-toolchain side of the fuzz targets (issue 24): replays the
//! committed seed corpus (`fuzz/corpus/<target>/`) through the targets'
//! own entry points (`database::fuzzing`), then runs random inputs built
//! with `arbitrary` from a seeded generator: protocol-shaped writes (right
//! and wrong lengths, names that are not UTF-8, Bind floods) and statement
//! texts made of the lexer's hard tokens. A few seconds; CI runs it with
//! the other tests. `PERF_AUDIT_FUZZ_SEED=N` replays one run, and
//! `PERF_AUDIT_FUZZ_INPUTS=N` sets how many inputs per target (default 20,000).

use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};
use perf_audit_analysis::database::fuzzing;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_wire_seed_corpus_holds_each_issue_case_and_parses() {
    let seeds = corpus("wire");
    for case in ["injection_parse", "comment_param_overflow", "non_utf8_parse_name", "random_bytes", "bind_flood"] {
        assert!(seeds.iter().any(|(n, _)| n == case), "missing seed {case}");
    }
    for (name, data) in &seeds {
        eprintln!("wire seed {name}");
        fuzzing::wire(data);
    }
}

#[test]
fn the_sql_text_seed_corpus_holds_each_issue_case_and_is_judged() {
    let seeds = corpus("sql_text");
    for case in ["injection", "comment_param_overflow", "param_u64_max", "non_utf8"] {
        assert!(seeds.iter().any(|(n, _)| n == case), "missing seed {case}");
    }
    for (name, data) in &seeds {
        eprintln!("sql_text seed {name}");
        fuzzing::sql_text(data);
    }
    let injection = &seeds.iter().find(|(n, _)| n == "injection").unwrap().1;
    assert!(perf_audit_analysis::database::sql_text::single_statement(std::str::from_utf8(injection).unwrap()).is_err());
}

/// splitmix64: the bytes `arbitrary` reads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn seed() -> u64 {
    std::env::var("PERF_AUDIT_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    })
}

fn inputs() -> usize {
    std::env::var("PERF_AUDIT_FUZZ_INPUTS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000)
}

/// One frontend message, lengths sometimes wrong.
#[derive(Debug, Arbitrary)]
enum Msg {
    Parse(Name, Text),
    Bind(Name, Name),
    Execute(Name),
    Close(bool, Name),
    Query(Text),
    Sync,
    Startup(u32),
    Tls,
    Raw(Vec<u8>),
    /// A message whose length field lies.
    BadLength(u8, u32, Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Name {
    Unnamed,
    Short(u8),
    /// A fresh name each time (a Bind flood).
    Counter,
    Bytes(Vec<u8>),
}

/// A statement text made of the tokens the lexer must get right.
#[derive(Debug)]
struct Text(Vec<u8>);

const TOKENS: &[&[u8]] = &[
    b"SELECT ", b"select ", b"WITH ", b"INSERT ", b"UPDATE ", b"DELETE ", b"VALUES ", b"TABLE ", b"COMMIT", b"CREATE TABLE x(i int)", b" FROM t", b" WHERE id = $1",
    b";", b";", b"'", b"''", b"E'", b"e'", b"\\", b"\\'", b"\"", b"\"\"", b"$", b"$$", b"$tag$", b"$1", b"$99999999999", b"$18446744073709551615", b"--", b"\n", b"/*", b"*/",
    b" ", b"(", b")", b"U&'", b"X'", b"a$b", b"\xff", b"\xc3", b"\0", b"\xe2\x80\xa8", b" ORDER BY a DESC", b" LIMIT 1",
];

impl<'a> Arbitrary<'a> for Text {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = u.int_in_range(0..=24)?;
        let mut out = Vec::new();
        for _ in 0..n {
            if u.ratio(1, 8)? {
                out.extend(Vec::<u8>::arbitrary(u)?);
            } else {
                out.extend_from_slice(u.choose(TOKENS)?);
            }
        }
        Ok(Text(out))
    }
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn name(n: &Name, counter: &mut u64) -> Vec<u8> {
    let mut v = match n {
        Name::Unnamed => Vec::new(),
        Name::Short(b) => format!("s{}", b % 4).into_bytes(),
        Name::Counter => {
            *counter += 1;
            format!("portal_{counter}").into_bytes()
        }
        Name::Bytes(b) => b.iter().copied().filter(|c| *c != 0).collect(),
    };
    v.push(0);
    v
}

fn encode(writes: &[Vec<Msg>]) -> Vec<u8> {
    let mut counter = 0;
    let mut out = Vec::new();
    for w in writes {
        let mut bytes = Vec::new();
        for m in w {
            match m {
                Msg::Parse(n, t) => {
                    let mut b = name(n, &mut counter);
                    b.extend(&t.0);
                    b.extend([0, 0, 0]);
                    bytes.extend(frame(b'P', &b));
                }
                Msg::Bind(p, s) => {
                    let mut b = name(p, &mut counter);
                    b.extend(name(s, &mut counter));
                    b.extend([0, 0, 0, 0, 0, 0]);
                    bytes.extend(frame(b'B', &b));
                }
                Msg::Execute(p) => {
                    let mut b = name(p, &mut counter);
                    b.extend([0, 0, 0, 0]);
                    bytes.extend(frame(b'E', &b));
                }
                Msg::Close(statement, n) => {
                    let mut b = vec![if *statement { b'S' } else { b'P' }];
                    b.extend(name(n, &mut counter));
                    bytes.extend(frame(b'C', &b));
                }
                Msg::Query(t) => {
                    let mut b = t.0.clone();
                    b.push(0);
                    bytes.extend(frame(b'Q', &b));
                }
                Msg::Sync => bytes.extend(frame(b'S', &[])),
                Msg::Startup(code) => {
                    bytes.extend(8u32.to_be_bytes());
                    bytes.extend(code.to_be_bytes());
                }
                Msg::Tls => bytes.extend([0x17, 0x03, 0x03, 0x00, 0x10]),
                Msg::Raw(b) => bytes.extend(b),
                Msg::BadLength(kind, len, body) => {
                    bytes.push(*kind);
                    bytes.extend(len.to_be_bytes());
                    bytes.extend(body);
                }
            }
        }
        // The agent sees a write's first 512 bytes.
        bytes.truncate(perf_audit_common::DB_PAYLOAD_BYTES.min(u16::MAX as usize));
        out.extend((bytes.len() as u16).to_le_bytes());
        out.extend(bytes);
    }
    out
}

#[test]
fn random_protocol_writes_never_panic_and_stay_bounded() {
    let seed = seed();
    eprintln!("PERF_AUDIT_FUZZ_SEED={seed}");
    let mut rng = Rng(seed);
    for _ in 0..inputs() {
        let raw = rng.bytes(4096);
        let mut u = Unstructured::new(&raw);
        let writes: Vec<Vec<Msg>> = Vec::arbitrary(&mut u).unwrap_or_default();
        fuzzing::wire(&encode(&writes));
        // And plain random bytes, as the fuzzer's first inputs would be.
        let n = (rng.next() % 600) as usize;
        fuzzing::wire(&rng.bytes(n));
    }
}

#[test]
fn random_statement_texts_are_judged_without_panic() {
    let seed = seed();
    eprintln!("PERF_AUDIT_FUZZ_SEED={seed}");
    let mut rng = Rng(seed ^ 0x5eed);
    let mut accepted = 0;
    for _ in 0..inputs() {
        let raw = rng.bytes(512);
        let Ok(text) = Text::arbitrary(&mut Unstructured::new(&raw)) else { continue };
        fuzzing::sql_text(&text.0);
        if let Ok(s) = std::str::from_utf8(&text.0) {
            accepted += usize::from(perf_audit_analysis::database::sql_text::single_statement(s).is_ok());
        }
    }
    // The generator reaches both sides of the validator.
    assert!(accepted > 0, "no generated text was accepted");
}
