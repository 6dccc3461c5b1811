#!/usr/bin/env python3
"""Writes the committed seed corpus (fuzz/corpus/<target>/): each case of
issue 24 plus ordinary traffic. Wire inputs are writes, each a 2-byte
little-endian length then its bytes (fuzzing::writes)."""
import os, random, struct

HERE = os.path.dirname(os.path.abspath(__file__))
INJECTION = b"SELECT v FROM t WHERE id = $1; COMMIT; BEGIN READ WRITE; CREATE TABLE x(i int); COMMIT; --"

def msg(kind, body):
    return kind + struct.pack("!I", len(body) + 4) + body

def parse(name, sql):
    return msg(b"P", name + b"\0" + sql + b"\0" + b"\0\0")

def bind(portal, stmt):
    return msg(b"B", portal + b"\0" + stmt + b"\0" + b"\0\0\0\0\0\0")

def execute(portal):
    return msg(b"E", portal + b"\0" + b"\0\0\0\0")

SYNC = msg(b"S", b"")

def writes(*ws):
    return b"".join(struct.pack("<H", len(w)) + w for w in ws)

def save(target, name, data):
    with open(os.path.join(HERE, "corpus", target, name), "wb") as f:
        f.write(data)

rng = random.Random(24)
startup = struct.pack("!I", 196608) + b"user\0postgres\0database\0postgres\0\0"
save("wire", "startup_and_sqlx_statement", writes(
    struct.pack("!I", len(startup) + 4) + startup,
    parse(b"sqlx_s_1", b"SELECT id, name FROM users WHERE id = $1") + msg(b"D", b"Ssqlx_s_1\0") + SYNC,
    bind(b"", b"sqlx_s_1") + execute(b"") + SYNC,
    msg(b"C", b"Ssqlx_s_1\0") + msg(b"C", b"P\0") + SYNC,
))
save("wire", "injection_parse", writes(parse(b"", INJECTION) + bind(b"", b"") + execute(b"") + SYNC))
save("wire", "comment_param_overflow", writes(parse(b"s", b"SELECT 1 -- $99999999999 $18446744073709551615") + bind(b"", b"s") + execute(b"") + SYNC))
save("wire", "non_utf8_parse_name", writes(parse(b"\xff\xfe\xc3(", b"SELECT 1") + bind(b"\xff", b"\xff\xfe\xc3(") + execute(b"\xff") + SYNC))
save("wire", "random_bytes", writes(*[bytes(rng.randrange(256) for _ in range(rng.randrange(1, 512))) for _ in range(8)]))
save("wire", "bind_flood", writes(parse(b"s", b"SELECT 1"), *[b"".join(bind(b"portal_%d_%d" % (w, i), b"s") for i in range(20)) for w in range(120)]))
save("wire", "ssl_tls_simple", writes(struct.pack("!II", 8, 80877103), bytes([0x17, 3, 3, 0, 0x20]) + b"\0" * 32, msg(b"Q", b"SELECT 1\0")))
save("wire", "truncated_and_split", writes(parse(b"", b"SELECT " + b"x, " * 300)[:512], b"x, x FROM t\0\0\0", msg(b"Q", b"SEL")[:7]))
save("wire", "startup_chain", writes(struct.pack("!II", 8, 0) * 50 + msg(b"Q", b"SELECT 2\0")))
save("wire", "lengths_at_the_edges", writes(b"Q\xff\xff\xff\xff", b"P\0\0\0\x04", b"B\0\0\0\x05\0", b"C\0\0\0\x05S", b"\0\0\0\x07\0\0\0\0"))

for name, text in [
    ("injection", INJECTION),
    ("comment_param_overflow", b"SELECT v FROM t WHERE id = $1 -- $99999999999"),
    ("param_u64_max", b"SELECT $18446744073709551615"),
    ("nested_comments", b"/* a /* b */ ; */ SELECT 1; /* c */"),
    ("dollar_quotes", b"SELECT $tag$ ; $$ $tag$, $$;$$ FROM t"),
    ("escape_string", b"SELECT E'\\'; COMMIT; --' FROM t"),
    ("quoted_ident", b"SELECT \"a;\"\"b\" FROM \"t;x\""),
    ("unicode_string", b"SELECT U&'\\0041;' , U&\"x;\""),
    ("unterminated", b"SELECT 'never closed; COMMIT"),
    ("non_utf8", b"SELECT '\xff\xfe'; \xc3("),
    ("not_plannable", b"CREATE TABLE x(i int)"),
    ("sort_keys", b"SELECT id FROM users WHERE country = $1 AND signup_at > $2 ORDER BY signup_at DESC LIMIT 20"),
    ("plan_json", b'[{"Plan": {"Node Type": "Seq Scan", "Relation Name": "t\\u00e9", "Schema": "public", "Alias": "t", "Filter": "((a)::text = \'x\'::text)", "Total Cost": 1.5, "Plan Rows": 3, "Plans": [{"Node Type": "Index Scan", "Index Name": "i", "Index Cond": "(a = 1)"}]}}]'),
    ("multibyte_table", b"SELECT * FROM \xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9 WHERE a = 1"),
]:
    save("sql_text", name, text)
