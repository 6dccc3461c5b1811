#!/usr/bin/env python3
"""Writes the seed corpus (issue 24's cases) from a tiny C program:
corpus/elf_files: a valid ELF with DWARF, .debug_info compressed with a
header claiming 1 TiB, a stripped ELF whose .gnu_debuglink names
`fifo.debug` (the harness makes that a FIFO), 4 bytes of .debug_info
changed, truncated ELF; corpus/proc_text: maps, net/tcp{,6}, cgroup text.
Run from this directory: python3 make_corpus.py (needs gcc, objcopy)."""
import os, struct, subprocess, tempfile

def sections(data):
    shoff, = struct.unpack_from('<Q', data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', data, 0x3A)
    hdrs = [struct.unpack_from('<IIQQQQ', data, shoff + i * shentsize) for i in range(shnum)]
    stroff = hdrs[shstrndx][4]
    out = {}
    for name, typ, flags, addr, off, size in hdrs:
        end = data.index(b'\0', stroff + name)
        out[data[stroff + name:end].decode()] = (off, size, flags)
    return out

tmp = tempfile.mkdtemp()
src = os.path.join(tmp, 'tiny.c')
open(src, 'w').write('int hot(int n){int s=0;for(int i=0;i<n;i++)s+=i*i;return s;}\nint main(int c,char**v){return hot(c*1000)&1;}\n')
exe = os.path.join(tmp, 'tiny')
subprocess.check_call(['gcc', '-g', '-O1', '-Wl,--build-id', '-o', exe, src])
valid = open(exe, 'rb').read()
out = 'corpus/elf_files/'
open(out + 'valid_with_dwarf', 'wb').write(valid)
open(out + 'truncated', 'wb').write(valid[:len(valid) // 2])

z = exe + '.z'
subprocess.check_call(['objcopy', '--compress-debug-sections=zlib', exe, z])
data = bytearray(open(z, 'rb').read())
off, size, flags = sections(data)['.debug_info']
assert flags & 0x800, 'SHF_COMPRESSED'
struct.pack_into('<Q', data, off + 8, 1 << 40)  # Elf64_Chdr.ch_size
open(out + 'compressed_debug_info_claims_1tib', 'wb').write(data)

corrupt = bytearray(valid)
off, size, _ = sections(corrupt)['.debug_info']
corrupt[off + 8:off + 12] = b'\xff\xff\xff\xff'
open(out + 'corrupt_debug_info_4_bytes', 'wb').write(corrupt)

link = os.path.join(tmp, 'fifo.debug')
subprocess.check_call(['objcopy', '--only-keep-debug', exe, link])
stripped = exe + '.stripped'
subprocess.check_call(['objcopy', '--strip-all', '--add-gnu-debuglink=' + link, exe, stripped])
open(out + 'debuglink_names_fifo', 'wb').write(open(stripped, 'rb').read())
open(out + 'debug_file_only', 'wb').write(open(link, 'rb').read())

p = 'corpus/proc_text/'
open(p + 'maps', 'w').write(open('/proc/self/maps').read())
open(p + 'maps_hostile', 'w').write(
    '55d0-55e0 r-xp 00000000 08:01 1 /tmp/a b (deleted)\n'
    'ffffffffffffffffff-0 r-xp zz 08:01 1 /x\n'
    '1000-2000 r-xp 00001000 08:01 1 /../../proc/self/fd/0\n'
    '1000- r-xp\n\n')
tcp = ('  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n'
       '   0: 0100007F:D431 0100007F:1538 01 00000000:00000000 00:00000000 00000000     0        0 424242 1 0 20 4 30 10 -1\n'
       '   1: 0100007F:D431 0100007F:FFFFF 01 0 0 0 0 0 18446744073709551616\n')
open(p + 'net_tcp', 'w').write(tcp)
open(p + 'net_tcp6', 'w').write(
    '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n'
    '   0: 00000000000000000000000001000000:D431 00000000000000000000000001000000:1538 01 00000000:00000000 00:00000000 00000000     0        0 4242 1\n'
    '   1: 0000000000000000000000000100:D431 0:1538 01 0 0 0 0 0 7\n')
open(p + 'cgroup', 'w').write(
    '0::/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope\n'
    '0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-abcdef.scope\n'
    '12:memory:/\n::\n0::/../../..\n')
open(p + 'socket_links', 'w').write('socket:[12345]\nsocket:[\nsocket:[99999999999999999999]\npipe:[1]\n')
