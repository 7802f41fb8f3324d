# Where a kept bench-icount run spends its instructions: the kernel's share
# by function, and each VM's (told apart by CR3) by the functions of the
# service ELF whose symbols match it best.
#
# A gdb Python script for a bundle kept by `bench-icount --keep DIR`, booted
# under QEMU's TCG and stopped for gdb (see README, "Where the instructions
# go"):
#
#   qemu-system-x86_64 -machine q35,accel=tcg -cpu max -m 1024M -smp 1 \
#       -display none -serial null -monitor none -no-reboot -nodefaults \
#       -kernel DIR/kernel.elf -initrd DIR/run-K.bundle \
#       -icount shift=0,sleep=off -s -S &
#   SKIP=3000 STEPS=100000 ELFS=DIR/hypercall-bench.elf,DIR/http.elf \
#       gdb -batch -x scripts/icount-profile.py DIR/kernel.elf
#
# It lets SKIP hypercalls pass (the boot and the warm-up), then single-steps
# STEPS instructions (fewer if the run ends) and prints the table (or
# writes it to OUT). Stepping under gdb is slow: 100,000 steps take some
# minutes. A kept run is short (`--ops 2000` makes 20 HTTP requests, about
# 15 hypercalls each, after about 350 for the boot): for the HTTP bundle
# SKIP=380 STEPS=35000 steps one request; a SKIP past the run's end is
# refused with a sentence.
import bisect
import collections
import os
import subprocess
import sys

import gdb

SKIP = int(os.environ.get("SKIP", "3000"))
STEPS = int(os.environ.get("STEPS", "100000"))
ELFS = [e for e in os.environ.get("ELFS", "").split(",") if e]
KERNEL_HALF = 0xFFFF800000000000


def symbols(elf):
    """The ELF's function symbols, sorted by address."""
    listing = subprocess.run(["nm", "-n", "-C", elf], capture_output=True, text=True, check=True).stdout
    addrs, names = [], []
    for line in listing.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            addrs.append(int(parts[0], 16))
            names.append(parts[2])
    return addrs, names


def function_at(table, pc):
    i = bisect.bisect_right(table[0], pc) - 1
    return table[1][i] if i >= 0 else "?"


def run_end():
    """The address of the kernel's `Kernel::finish`, where a run ends."""
    addrs, names = symbols(gdb.objfiles()[0].filename)
    return next(a for a, n in zip(addrs, names) if n.startswith("<denali_kernel::run::Kernel<") and n.endswith(">::finish"))


def step_and_count():
    """Instructions stepped, by (CR3 or 0 for the kernel, pc)."""
    gdb.execute("set pagination off")
    gdb.execute("target remote :1234")
    end = run_end()
    gdb.Breakpoint("*0x%x" % end, internal=True)
    hypercall = gdb.Breakpoint("*denali_trap_stub_4", internal=True)
    for made in range(SKIP):
        gdb.execute("continue", to_string=True)
        if int(gdb.parse_and_eval("$pc")) == end:
            # A kept run is short: `--ops N` makes N/100 HTTP requests of
            # about 15 hypercalls each, after a boot of a few hundred.
            gdb.execute("kill")
            raise gdb.GdbError("the run ended after %d hypercalls, before SKIP=%d: give a smaller SKIP" % (made, SKIP))
    hypercall.enabled = False
    counts = collections.Counter()
    for _ in range(STEPS):
        pc = int(gdb.parse_and_eval("$pc"))
        if pc == end:
            break
        space = 0 if pc >= KERNEL_HALF else int(gdb.parse_and_eval("$cr3")) & ~0xFFF
        counts[(space, pc)] += 1
        gdb.execute("stepi", to_string=True)
    return counts


def kernel_function(pc, cache={}):
    if pc not in cache:
        said = gdb.execute("info symbol 0x%x" % pc, to_string=True)
        cache[pc] = said.split(" in section")[0].rsplit(" + ", 1)[0].strip()
    return cache[pc]


def service_of(counter, tables):
    """The ELF in which most of the addresses this space ran are where a
    function starts (every call steps onto one; in another ELF's table the
    same addresses fall mid-function)."""

    def score(elf):
        starts = set(tables[elf][0])
        return sum(1 for pc in counter if pc in starts)

    return max(tables, key=score)


def report(counts, out):
    tables = {elf: symbols(elf) for elf in ELFS}
    by_space = collections.defaultdict(collections.Counter)
    for (space, pc), n in counts.items():
        by_space[space][pc] += n
    total = sum(counts.values())
    for space, counter in sorted(by_space.items()):
        if space == 0:
            label, name = "kernel", kernel_function
        elif tables:
            elf = service_of(counter, tables)
            label = "cr3 %x (%s)" % (space, os.path.basename(elf))
            name = lambda pc, table=tables[elf]: function_at(table, pc)  # noqa: E731
        else:
            label, name = "cr3 %x" % space, lambda pc: "0x%x" % pc  # noqa: E731
        functions = collections.Counter()
        for pc, n in counter.items():
            functions[name(pc)] += n
        mine = sum(counter.values())
        out.write("== %s: %d of %d instructions (%.1f%%)\n" % (label, mine, total, 100.0 * mine / total))
        for function, n in functions.most_common(40):
            out.write("%8d  %5.1f%%  %s\n" % (n, 100.0 * n / total, function[:150]))


counts = step_and_count()
if "OUT" in os.environ:
    with open(os.environ["OUT"], "w") as out:
        report(counts, out)
else:
    report(counts, sys.stdout)
gdb.execute("kill")
