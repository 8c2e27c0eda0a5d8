# vbas — non-recursive GNU Makefile.
#   make            library (static + shared), CLI, nbdkit plugin
#   make check      unit, model, crash, CLI and NBD tests, plain and under ASan+UBSan
#   make demo       the end-to-end demo on a pool in a file
#   make bench      benchmarks (not tests); BENCH_ARGS=--sharing-only: just sharing,
#                   --nbd-only: just the NBD benchmark, --no-nbd: all but it
#   make fuzz       each libFuzzer harness for FUZZ_TIME seconds (default 300;
#                   docs/fuzzing.md), built by make fuzz-bin into build-fuzz/
#   make install    PREFIX=/usr/local DESTDIR=  (the plugin goes to nbdkit's
#                   plugin directory, NBDKIT_PLUGINDIR=; the man pages to
#                   MANDIR, the bash completion to BASHCOMPDIR)

PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
BINDIR  ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR  ?= $(DATADIR)/man
# Where bash-completion loads completions from by command name.
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
O       ?= build
SAN     ?=

CC      ?= cc
OPT     ?= -O2
WARN    := -Wall -Wextra -Werror -Wshadow -Wno-missing-field-initializers
CFLAGS  ?= $(OPT) -g
ALLCFLAGS = -std=gnu11 $(WARN) $(CFLAGS) -fPIC -pthread -Iinclude -Ilib -MMD -MP
LDLIBS  := -pthread
ifeq ($(SAN),1)
ALLCFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS   += -fsanitize=address,undefined
endif

# nbdkit's plugin directory: where `make install` puts the plugin and
# where `vbas serve` looks for it when it is not beside the vbas binary.
# Where make install puts the plugin, and where an installed vbas serve
# looks for it: under the prefix, unless set (e.g. to nbdkit's own
# directory, pkg-config --variable=plugindir nbdkit, for 'nbdkit vbas').
NBDKIT_PLUGINDIR ?= $(LIBDIR)/nbdkit/plugins
NBDKIT_CFLAGS   := $(shell pkg-config --cflags nbdkit 2>/dev/null)
PLUGIN  := $(O)/nbdkit-vbas-plugin.so
# The sanitizer build has no plugin: nbdkit, which is not built with
# ASan, cannot dlopen an ASan-built shared object.
ifneq ($(SAN),1)
ALL_PLUGIN := $(PLUGIN)
endif

VERSION := $(shell sed -n 's/.*VBAS_VERSION_STRING "\(.*\)"/\1/p' include/vbas.h)

LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(O)/%.o)
CLI_SRC := $(wildcard tools/*.c)
CLI_OBJ := $(CLI_SRC:%.c=$(O)/%.o)
TEST_SRC := $(wildcard tests/unit/test-*.c tests/model/test-*.c tests/crash/test-*.c)
TEST_BIN := $(TEST_SRC:%.c=$(O)/%)
TEST_COMMON := $(O)/tests/common.o
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:%.c=$(O)/%)

all: $(O)/libvbas.a $(O)/libvbas.so $(O)/vbas $(O)/vbas.pc $(ALL_PLUGIN)

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) -c -o $@ $<

# The library's objects hide every symbol but those vbas.h marks VBAS_API
# (the static archive and the tests link them all the same: hidden
# symbols still resolve between objects of one link).
$(O)/lib/%.o: ALLCFLAGS += -fvisibility=hidden

$(O)/libvbas.a: $(LIB_OBJ)
	$(AR) rcs $@ $^

# libvbas.so exports what include/vbas.h declares and nothing else: the
# version script lists every vbas_ function the header declares (comments
# stripped by the preprocessor); the rest is local.
$(O)/libvbas.map: include/vbas.h
	@mkdir -p $(O)
	{ echo 'VBAS_0 {'; echo '  global:'; \
	  $(CC) -E -P include/vbas.h | grep -o 'vbas_[a-z0-9_]* *(' | tr -d ' (' | sort -u | \
	  sed 's/.*/    &;/'; echo '  local: *;'; echo '};'; } > $@
$(O)/libvbas.so: $(LIB_OBJ) $(O)/libvbas.map
	$(CC) -shared -Wl,-soname,libvbas.so.0 -Wl,--version-script=$(O)/libvbas.map $(LDFLAGS) \
		-o $@ $(LIB_OBJ) $(LDLIBS)

# The CLI probes a target for signatures before format (libblkid).
BLKID_CFLAGS := $(shell pkg-config --cflags blkid 2>/dev/null)
BLKID_LIBS   := $(shell pkg-config --libs blkid 2>/dev/null || echo -lblkid)
# Its tables: libsmartcols (util-linux's, as lsblk's).
SCOLS_CFLAGS := $(shell pkg-config --cflags smartcols 2>/dev/null)
SCOLS_LIBS   := $(shell pkg-config --libs smartcols 2>/dev/null || echo -lsmartcols)

$(O)/vbas: $(CLI_OBJ) $(O)/libvbas.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(BLKID_LIBS) $(SCOLS_LIBS)

$(O)/tools/vbas.o: ALLCFLAGS += -DVBAS_NBDKIT_PLUGINDIR='"$(NBDKIT_PLUGINDIR)"' $(BLKID_CFLAGS)
$(O)/tools/table.o: ALLCFLAGS += $(SCOLS_CFLAGS)

# The plugin carries the library inside; only nbdkit's entry point is
# exported.
$(O)/nbdkit/%.o: ALLCFLAGS += $(NBDKIT_CFLAGS)
$(PLUGIN): $(O)/nbdkit/vbas-plugin.o $(O)/nbdkit/events.o $(O)/tools/copy.o $(O)/libvbas.a
	$(CC) -shared $(LDFLAGS) -Wl,--exclude-libs,ALL -o $@ $^ $(LDLIBS)

$(O)/vbas.pc: vbas.pc.in include/vbas.h
	@mkdir -p $(O)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCDIR@|$(INCDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' $< > $@

$(O)/tests/%: tests/%.c $(TEST_COMMON) $(O)/libvbas.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) -Itests $(LDFLAGS) -o $@ $< $(TEST_COMMON) $(O)/libvbas.a $(LDLIBS) -lcmocka

$(O)/bench/%: bench/%.c $(O)/libvbas.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $< $(O)/libvbas.a $(LDLIBS)

tests-bin: $(TEST_BIN) $(O)/vbas

# ---- Fuzzing (docs/fuzzing.md): clang's libFuzzer, the library built again
# with the fuzzer's coverage and ASan+UBSan into its own directory.
FUZZ_O     ?= build-fuzz
FUZZ_CC    ?= clang
FUZZ_TIME  ?= 300
FUZZ_NAMES := node sb pool ctl
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS = -std=gnu11 $(WARN) -Wno-unknown-attributes -O1 -g -pthread -Iinclude -Ilib -MMD -MP $(FUZZ_SAN)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_O)/%.o)
FUZZ_BIN   := $(FUZZ_NAMES:%=$(FUZZ_O)/fuzz/fuzz-%) $(FUZZ_O)/fuzz/mkseeds

$(FUZZ_O)/lib/%.o $(FUZZ_O)/fuzz/%.o: ALLCFLAGS = $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link
$(FUZZ_O)/lib/%.o: lib/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(ALLCFLAGS) -c -o $@ $<
$(FUZZ_O)/fuzz/%.o: fuzz/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(ALLCFLAGS) -c -o $@ $<
$(FUZZ_O)/libvbas.a: $(FUZZ_LIB_OBJ)
	$(AR) rcs $@ $^
# The pool and node harnesses bring the structure-aware mutator.
$(FUZZ_O)/fuzz/fuzz-pool $(FUZZ_O)/fuzz/fuzz-node: $(FUZZ_O)/fuzz/mutator.o
$(FUZZ_O)/fuzz/fuzz-%: $(FUZZ_O)/fuzz/fuzz-%.o $(FUZZ_O)/libvbas.a
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $(filter %.o,$^) $(FUZZ_O)/libvbas.a $(LDLIBS)
$(FUZZ_O)/fuzz/mkseeds: $(FUZZ_O)/fuzz/mkseeds.o $(FUZZ_O)/libvbas.a
	$(FUZZ_CC) $(FUZZ_SAN) -o $@ $^ $(LDLIBS)

fuzz-bin: $(FUZZ_BIN)

# FUZZ_TIME=SEC per harness; FUZZ_ARGS=harness names (default all).
fuzz: fuzz-bin
	fuzz/run.sh $(FUZZ_O) --time $(FUZZ_TIME) $(FUZZ_ARGS)

# The three builds use every processor (make check is run without -j).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
check:
	@scripts/install-deps.sh --check-only >/dev/null 2>&1 || scripts/install-deps.sh
	$(MAKE) --no-print-directory -j$(JOBS) all tests-bin O=build
	$(MAKE) --no-print-directory -j$(JOBS) all tests-bin O=build-san SAN=1 OPT=-O1
	$(MAKE) --no-print-directory -j$(JOBS) fuzz-bin
	tests/run-tests.sh build build-san --fuzz $(FUZZ_O)

demo: all
	scripts/demo.sh $(O)

# The systemd units of vbas serve (scripts/systemd): vbas-serve@.socket
# listens, vbas-serve@.service runs $(BINDIR)/vbas serve at the first
# connection (socket activation).  Under the prefix unless set.
SYSTEMD_UNITDIR ?= $(PREFIX)/lib/systemd/system
install: install-systemd
install-systemd:
	install -d $(DESTDIR)$(SYSTEMD_UNITDIR)
	sed 's|@BINDIR@|$(BINDIR)|g' scripts/systemd/vbas-serve@.service.in \
		> $(DESTDIR)$(SYSTEMD_UNITDIR)/vbas-serve@.service
	chmod 644 $(DESTDIR)$(SYSTEMD_UNITDIR)/vbas-serve@.service
	install -m 644 scripts/systemd/vbas-serve@.socket $(DESTDIR)$(SYSTEMD_UNITDIR)/vbas-serve@.socket
.PHONY: install-systemd

# make bench BENCH_ARGS=--sharing-only (or --no-sharing, --nbd-only, --no-nbd,
# --nbd-time SEC, ...: bench/run.sh; the NBD part is bench/nbd.sh).  Writes
# $(O)/bench.log, the results file $(O)/bench.tsv (bench/results.sh) and,
# with gnuplot, its plot $(O)/bench.png (bench/plot.sh; docs/bench.md).
bench: all $(BENCH_BIN)
	bench/run.sh $(O) $(BENCH_ARGS)

install: all
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR) $(DESTDIR)$(BINDIR)
	install -m 644 include/vbas.h $(DESTDIR)$(INCDIR)/vbas.h
	install -m 644 $(O)/libvbas.a $(DESTDIR)$(LIBDIR)/libvbas.a
	install -m 755 $(O)/libvbas.so $(DESTDIR)$(LIBDIR)/libvbas.so.$(VERSION)
	ln -sf libvbas.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libvbas.so.0
	ln -sf libvbas.so.0 $(DESTDIR)$(LIBDIR)/libvbas.so
	install -m 644 $(O)/vbas.pc $(DESTDIR)$(LIBDIR)/pkgconfig/vbas.pc
	install -m 755 $(O)/vbas $(DESTDIR)$(BINDIR)/vbas
	install -d $(DESTDIR)$(NBDKIT_PLUGINDIR)
	install -m 755 $(PLUGIN) $(DESTDIR)$(NBDKIT_PLUGINDIR)/nbdkit-vbas-plugin.so
	install -d $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(BASHCOMPDIR)
	install -m 644 docs/man/vbas.8 $(DESTDIR)$(MANDIR)/man8/vbas.8
	install -m 644 docs/man/libvbas.3 $(DESTDIR)$(MANDIR)/man3/libvbas.3
	install -m 644 scripts/vbas-completion.bash $(DESTDIR)$(BASHCOMPDIR)/vbas

clean:
	rm -rf build build-san $(FUZZ_O)

.PHONY: all check demo bench install clean tests-bin fuzz fuzz-bin
.SECONDARY:

-include $(shell find $(O) $(if $(filter fuzz%,$(MAKECMDGOALS)),$(FUZZ_O)) -name '*.d' 2>/dev/null)
