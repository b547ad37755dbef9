# recordd build. Out of tree into $(BUILD); generated code in $(BUILD)/gen.
#   make            build recordd (and the test binaries' library)
#   make run        install missing Debian packages, build, start the server
#   make test       install, build, run unit + e2e tests (e2e on SQLite, then on PostgreSQL)
#   make run BACKEND=postgres   the same on a local PostgreSQL cluster in ./pgdata
#   make check      the same tests under ASan + UBSan (separate build dir)
#   make test-cluster  three recordd processes on one PostgreSQL, and a failover
#                   to a synchronous standby (tests/cluster/)
#   make fuzz       libFuzzer runs: token parser/verifier, filter parser (FUZZ_SECONDS each, 25)
#   make image-test build docker/Dockerfile with buildah, run it with podman, check the
#                   k8s manifests (tests/image/; needs root; installs IMAGE_PKGS)
#   make fmt        clang-format every source file
#   make install    recordd and recordctl into $(PREFIX)/bin [/usr/local]
#   make errors-doc regenerate docs/errors.md from the error table
#   make clean

BUILD   ?= build
GEN     := $(BUILD)/gen
SAN     ?=
CC      ?= cc
PYTHON  ?= /usr/bin/python3

# Debian packages the build, the tests and `make run` need (chromium: the
# browser tests of tests/e2e/test_cors.py).
DEB_PKGS := build-essential pkg-config protobuf-compiler protobuf-compiler-grpc protobuf-c-compiler libprotobuf-dev \
            libprotobuf-c-dev libgrpc-dev grpc-proto golang-github-gogo-googleapis-dev \
            libsqlite3-dev libsodium-dev libjansson-dev libmicrohttpd-dev libgnutls28-dev libcmocka-dev xxd zlib1g-dev \
            python3-grpcio python3-protobuf python3-requests python3-pytest python3-cryptography openssl sqlite3 \
            postgresql libpq-dev clang libclang-rt-14-dev wrk chromium

PROTO_INC := -Iproto -I/usr/include -I/usr/share/grpc-proto \
             -I/usr/share/gocode/src/github.com/gogo/googleapis

# Our protos plus every import the C code needs; the descriptor set carries
# their transitive closure for reflection and the HTTP gateway.
OWN_PROTOS  := $(wildcard proto/recordd/v1/*.proto)
DEP_PROTOS  := google/protobuf/struct.proto google/protobuf/timestamp.proto google/protobuf/field_mask.proto \
               google/protobuf/wrappers.proto google/protobuf/descriptor.proto \
               google/protobuf/any.proto google/protobuf/duration.proto \
               google/api/annotations.proto google/api/http.proto \
               google/rpc/status.proto google/rpc/error_details.proto \
               grpc/health/v1/health.proto grpc/reflection/v1/reflection.proto \
               grpc/reflection/v1alpha/reflection.proto
PROTO_NAMES := $(OWN_PROTOS:proto/%=%) $(DEP_PROTOS)
GEN_C       := $(addprefix $(GEN)/,$(PROTO_NAMES:.proto=.pb-c.c))
GEN_H       := $(GEN_C:.c=.h)
DESC_SET    := $(BUILD)/descriptors.binpb
DESC_C      := $(GEN)/descriptor_set.c

PKGS    := grpc libprotobuf-c sqlite3 libpq libsodium jansson libmicrohttpd gnutls zlib
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Werror
OPT     ?= -O2
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -g $(OPT) -pthread -I. -I$(GEN) \
               $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
ifeq ($(SAN),1)
BASE_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SAN_LDFLAGS := -fsanitize=address,undefined
endif
LDLIBS  := -lgrpc -lgpr -lprotobuf-c -lsqlite3 -lpq -lsodium -ljansson -lmicrohttpd -lgnutls -lz -pthread -lm

LIB_SRC := $(wildcard common/*.c store/*.c auth/*.c) $(filter-out service/main.c,$(wildcard service/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(GEN_C:$(GEN)/%.c=$(BUILD)/obj/gen/%.o) \
           $(BUILD)/obj/gen/descriptor_set.o
LIB     := $(BUILD)/librecordd.a
BIN     := $(BUILD)/recordd
TOOLS   := $(patsubst tools/%.c,$(BUILD)/%,$(wildcard tools/*.c))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps node-deps run test unit e2e check fmt clean
.DEFAULT_GOAL := all
.SECONDARY:

all: $(BIN) $(TOOLS) $(UNIT_BIN)

# --- dependencies -------------------------------------------------------
# npm (for the buf CLI in the e2e tests) comes from Debian only when the
# machine has no npm at all: a Node.js installed another way conflicts with it.
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done; command -v npm >/dev/null || echo npm); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages (run as root or install): $$missing"; exit 1; fi; \
	fi

# The npm tools the tests drive (buf, the OpenAPI validators, the TypeScript
# toolchain, kubernetes-models, the fetch-based SSE client and playwright-core
# for the browser tests), pinned in tests/node/package.json and
# installed into build/node whenever that file changes. Tests that need one
# install it the same way when run on their own.
NODE_DIR := build/node
node-deps: deps $(NODE_DIR)/.installed

$(NODE_DIR)/.installed: tests/node/package.json
	@mkdir -p $(NODE_DIR)
	cp tests/node/package.json $(NODE_DIR)/package.json
	npm install --no-audit --no-fund --prefix $(NODE_DIR)
	@touch $@

# --- generated code -----------------------------------------------------
$(GEN)/.stamp: $(OWN_PROTOS) Makefile
	@mkdir -p $(GEN)
	protoc $(PROTO_INC) --c_out=$(GEN) $(PROTO_NAMES)
	@touch $@

$(GEN_C) $(GEN_H): $(GEN)/.stamp

$(DESC_SET): $(OWN_PROTOS) Makefile
	@mkdir -p $(BUILD)
	protoc $(PROTO_INC) --include_imports --include_source_info \
	    --descriptor_set_out=$@ $(OWN_PROTOS) grpc/health/v1/health.proto \
	    grpc/reflection/v1/reflection.proto grpc/reflection/v1alpha/reflection.proto \
	    google/rpc/status.proto google/rpc/error_details.proto

$(DESC_C): $(DESC_SET)
	@mkdir -p $(GEN)
	xxd -i -n rd_descriptor_set $< > $@

# The method table's rows come from the descriptor set (service/svc_methods.c):
# a small generator, linked only with protobuf-c, writes them as an X-macro.
METHODS_GEN := $(GEN)/svc_methods_gen.h
GEN_METHODS := $(BUILD)/build-tools/gen_methods
$(GEN_METHODS): tools/build/gen_methods.c $(BUILD)/obj/gen/google/protobuf/descriptor.pb-c.o
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(WARN) -o $@ $^ -lprotobuf-c
$(METHODS_GEN): $(GEN_METHODS) $(DESC_SET)
	$(GEN_METHODS) $(DESC_SET) > $@.tmp && mv $@.tmp $@
$(BUILD)/obj/service/svc_methods.o: $(METHODS_GEN)

# --- objects ------------------------------------------------------------
# (the stamp too: protoc rewrites the .c files as a side effect of the stamp's
# recipe, which make does not see through the recipe-less rule above)
$(BUILD)/obj/gen/%.o: $(GEN)/%.c $(GEN)/.stamp
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -w -c $< -o $@

$(BUILD)/obj/%.o: %.c $(GEN)/.stamp
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(WARN) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/obj/service/main.o $(LIB)
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%: $(BUILD)/obj/tools/%.o $(LIB)
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

# JSON codec test messages: tests/unit/gwtest.proto (every field kind and
# well-known type) plus the WKT the server does not use, generated into
# $(GEN)/test and linked into test_gw_json only.
GWTEST_C   := $(addprefix $(GEN)/test/,gwtest.pb-c.c google/protobuf/empty.pb-c.c)
GWTEST_OBJ := $(GWTEST_C:$(GEN)/%.c=$(BUILD)/obj/gen/%.o)
$(GEN)/test/.stamp: tests/unit/gwtest.proto $(GEN)/.stamp
	@mkdir -p $(GEN)/test
	protoc $(PROTO_INC) -Itests/unit --c_out=$(GEN)/test gwtest.proto google/protobuf/empty.proto
	@touch $@
$(GWTEST_C): $(GEN)/test/.stamp
$(BUILD)/obj/gen/test/%.o $(BUILD)/obj/tests/unit/test_gw_json.o: BASE_CFLAGS += -I$(GEN)/test
$(BUILD)/obj/tests/unit/test_gw_json.o: $(GEN)/test/.stamp
$(BUILD)/tests/test_gw_json: $(BUILD)/obj/tests/unit/test_gw_json.o $(GWTEST_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# --- running ------------------------------------------------------------
# BACKEND=postgres: on a local PostgreSQL cluster of its own (tools/run-pg.sh)
run: deps all
	@sh tools/$(if $(filter postgres,$(BACKEND)),run-pg.sh,run.sh) $(BIN)

# --- tests --------------------------------------------------------------
# Unit tests named test_pg_* need a PostgreSQL server: each runs under
# PG_RUN, which starts a throw-away cluster (tests/pg/pgcluster.py), gives
# the test its URI in RECORDD_TEST_PG (and PGPASSFILE), and removes it after.
PG_RUN ?= $(PYTHON) tests/pg/pgcluster.py run --

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; \
	  case $${t##*/} in test_pg_*) $(PG_RUN) $$t;; *) $$t;; esac; done

e2e: $(BIN) $(TOOLS)
	RECORDD_BIN=$(abspath $(BIN)) RECORDD_BUILD=$(abspath $(BUILD)) \
	  $(PYTHON) -m pytest -q tests/e2e

# The e2e suite with every server on PostgreSQL (tests/e2e/harness.py: one
# cluster for the session, a fresh database per server); the sqlite_only
# tests are skipped.
.PHONY: e2e-pg
e2e-pg: $(BIN) $(TOOLS)
	RECORDD_TEST_BACKEND=postgres RECORDD_BIN=$(abspath $(BIN)) RECORDD_BUILD=$(abspath $(BUILD)) \
	  $(PYTHON) -m pytest -q tests/e2e

# Several recordd processes on one PostgreSQL database, and a failover to a
# synchronous standby under write load (tests/cluster/README.md): each test
# module starts the clusters it needs.
.PHONY: test-cluster
test-cluster: deps $(BIN) $(TOOLS)
	RECORDD_TEST_BACKEND=postgres RECORDD_BIN=$(abspath $(BIN)) RECORDD_BUILD=$(abspath $(BUILD)) \
	  $(PYTHON) -m pytest -q -s tests/cluster

# The whole e2e suite runs twice: on SQLite, then on PostgreSQL.
test: deps node-deps
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) e2e
	$(MAKE) e2e-pg

check: deps node-deps
	$(MAKE) BUILD=build/san SAN=1 OPT=-O1 all
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(MAKE) BUILD=build/san SAN=1 OPT=-O1 unit e2e e2e-pg

fmt:
	clang-format -i $$(git ls-files '*.c' '*.h')

# make install: recordd and recordctl into $(DESTDIR)$(PREFIX)/bin, so
# `recordctl …` works from any directory.
PREFIX ?= /usr/local
.PHONY: install
install: $(BIN) $(BUILD)/recordctl
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN) $(BUILD)/recordctl $(DESTDIR)$(PREFIX)/bin/

# buf (buf.yaml, buf.gen.yaml; docs/clients.md): the googleapis files the
# protos import, from Debian's packages, as a local buf module.
GOOGLEAPIS := /usr/share/gocode/src/github.com/gogo/googleapis
.PHONY: buf-deps
buf-deps:
	@mkdir -p $(BUILD)/buf-deps/google/api $(BUILD)/buf-deps/google/rpc
	cp $(GOOGLEAPIS)/google/api/annotations.proto $(GOOGLEAPIS)/google/api/http.proto \
	    $(BUILD)/buf-deps/google/api/
	cp $(GOOGLEAPIS)/google/rpc/status.proto $(BUILD)/buf-deps/google/rpc/

# docs/errors.md is generated from the error table (common/rd.c); a test
# fails when the two disagree.
.PHONY: errors-doc
errors-doc: $(BUILD)/recordctl
	$(BUILD)/recordctl errors > docs/errors.md

clean:
	rm -rf build

# --- benchmarks (bench/, docs/PERFORMANCE.md) ---------------------------
# `make bench` runs bench/run.sh: sqlite-limit, then recordd-bench against a
# freshly started build/recordd; figures are only compared within one run.
# `make bench BACKEND=postgres` runs bench/pg.sh instead: the update
# scenario on SQLite and on a throw-away durable PostgreSQL cluster, side by
# side in one run (BENCH_ROUNDS, PG_BIN: see the script).
# `make bench BACKEND=postgres REPLICAS=3`: update@64 spread over 1, 2 and 3
# recordd processes on one PostgreSQL database (bench/pg_replicas.sh).
BENCH_BINS := $(BUILD)/recordd-bench $(BUILD)/sqlite-limit

all: $(BENCH_BINS)

$(BUILD)/recordd-bench: $(BUILD)/obj/bench/recordd_bench.o $(BUILD)/obj/bench/hist.o $(LIB)
	$(CC) $(SAN_LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/sqlite-limit: $(BUILD)/obj/bench/sqlite_limit.o
	$(CC) $(SAN_LDFLAGS) -o $@ $^ -lsqlite3 -lm

.PHONY: bench soak
bench: $(BIN) $(TOOLS) $(BENCH_BINS)
ifeq ($(BACKEND),postgres)
	BENCH_DURATION=$(or $(BENCH_DURATION),8) PYTHON=$(PYTHON) REPLICAS=$(REPLICAS) sh bench/pg.sh $(BUILD)
else
	@[ -z "$(REPLICAS)" ] || { echo "make bench: REPLICAS needs BACKEND=postgres (processes share a PostgreSQL database)" >&2; exit 1; }
	BENCH_DURATION=$(or $(BENCH_DURATION),8) PYTHON=$(PYTHON) sh bench/run.sh $(BUILD)
endif

# DESIGN.md §10's 10-minute RSS soak (SOAK_SECONDS to change its length).
soak: $(BIN) $(TOOLS) $(BENCH_BINS)
	PYTHON=$(PYTHON) sh bench/soak.sh $(BUILD)

# --- fuzzing (docs/internals/auth.md, Fuzzing) ----------------------------
# libFuzzer needs clang and its runtime (libclang-rt-14-dev, in DEB_PKGS).
# The corpus is seeded from the capability-token test cases.
FUZZ_SECONDS ?= 25
FUZZ_BIN     := $(BUILD)/fuzz/fuzz_token
FUZZ_FILTER_BIN := $(BUILD)/fuzz/fuzz_filter
GW_FUZZ_SECONDS ?= 20
FUZZ_GW_BINS := $(BUILD)/fuzz/fuzz_json $(BUILD)/fuzz/fuzz_route

.PHONY: fuzz
$(FUZZ_BIN): tests/fuzz/fuzz_token.c $(wildcard auth/*.c auth/*.h) common/rd.c common/rd.h
	@mkdir -p $(dir $@)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_token.c auth/*.c \
	    common/rd.c -lsodium -ljansson -o $@

$(BUILD)/fuzz/corpus/.seeded: tests/unit/testdata/auth/capability-tokens.json
	@mkdir -p $(dir $@)
	$(PYTHON) -c 'import json, sys, pathlib; d = pathlib.Path(sys.argv[2]); \
	  [ (d / ("seed-%03d" % i)).write_bytes(b"\0" + t["token"].encode()) \
	    for i, t in enumerate(json.load(open(sys.argv[1]))["tests"]) if "token" in t ]' $< $(dir $@)
	@touch $@

fuzz: deps $(FUZZ_BIN) $(BUILD)/fuzz/corpus/.seeded $(FUZZ_FILTER_BIN) $(BUILD)/fuzz/filter-corpus/.seeded \
      $(FUZZ_GW_BINS) $(BUILD)/fuzz/json-corpus/.seeded $(BUILD)/fuzz/route-corpus/.seeded
	$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(BUILD)/fuzz/corpus
	$(FUZZ_FILTER_BIN) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(BUILD)/fuzz/filter-corpus
	$(BUILD)/fuzz/fuzz_json -max_total_time=$(GW_FUZZ_SECONDS) -print_final_stats=1 $(BUILD)/fuzz/json-corpus
	$(BUILD)/fuzz/fuzz_route -max_total_time=$(GW_FUZZ_SECONDS) -print_final_stats=1 $(BUILD)/fuzz/route-corpus

# The filter grammar and order_by (store/filter.c) against a fixed schema with
# references; the first byte picks the parser (bit 0: filter or order_by) and
# whether paths go through a group-restricting access (bit 1). Seeds include
# dotted paths, valid and not, and injection attempts.
$(FUZZ_FILTER_BIN): tests/fuzz/fuzz_filter.c $(wildcard store/*.c store/*.h) common/rd.c common/rd.h
	@mkdir -p $(dir $@)
	clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -I. \
	    $(shell pkg-config --cflags libpq) tests/fuzz/fuzz_filter.c store/*.c common/rd.c \
	    -lsqlite3 -lpq -lsodium -ljansson -pthread -lm -o $@

$(BUILD)/fuzz/filter-corpus/.seeded:
	@mkdir -p $(dir $@)
	@printf '\000s = "a\\"b" AND i >= -3 AND n < 1.5 AND b != true AND t > "2024-01-01T00:00:00Z"' > $(dir $@)seed-1
	@printf '\000e = null AND id = "x" AND version <= 2 AND syncId > 0 AND group != "g"' > $(dir $@)seed-2
	@printf '\001i desc, s asc, createdAt, id' > $(dir $@)seed-3
	@printf '\000r.s = "a" AND r.r.s != null AND r.r.back.i >= 2 AND self.r.id = "p"' > $(dir $@)seed-4
	@printf '\002r.s = "a" AND self.self.self.s = "x" AND r.r.back.group = "g"' > $(dir $@)seed-5
	@printf '\000r.s" OR 1=1 --' > $(dir $@)seed-6
	@printf '\002r."x" = "a" AND r. s = "b"' > $(dir $@)seed-7
	@printf '\000r.s = "x\\" OR 1=1 --" AND r.i < 2.5 AND r.j = "x"' > $(dir $@)seed-8
	@printf '\000self.self.self.self.self.self.self.self.self.self.self.self.s = "deep"' > $(dir $@)seed-9
	@printf '\003r.s desc, self.i, r.i asc, s' > $(dir $@)seed-10
	@printf '\001r.r.s, self.self.id' > $(dir $@)seed-11
	@touch $@

# The gateway's JSON codec and path matcher (service/gw_json.c, gw_route.c):
# the file under test is built with coverage, the generated descriptors and
# the method table come from $(LIB). First byte: request type / HTTP verb.
$(BUILD)/fuzz/fuzz_json: tests/fuzz/fuzz_json.c service/gw_json.c service/gw_json.h common/rd.c $(LIB)
$(BUILD)/fuzz/fuzz_route: tests/fuzz/fuzz_route.c service/gw_route.c service/gw_route.h $(LIB)
$(FUZZ_GW_BINS):
	@mkdir -p $(dir $@)
	clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -I. -I$(GEN) \
	    $(filter %.c,$^) $(LIB) $(LDLIBS) -o $@

$(BUILD)/fuzz/json-corpus/.seeded:
	@mkdir -p $(dir $@)
	@printf '\000{"model":"m","id":"a","data":{"x":[1,2.5,"s",null,{"y":true}]},"expectedVersion":"3","onStale":"NOTIFY"}' > $(dir $@)seed-1
	@printf '\002{"schema":{"models":[{"name":"m","fields":[{"name":"f","type":"STRING","maxLength":5,"min":1.5,"defaultValue":"x"}]}]},"force":true}' > $(dir $@)seed-2
	@printf '\010{"code":10,"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"r","metadata":{"k":"v"}},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}' > $(dir $@)seed-3
	@printf '\004{"sinceSyncId":"12","models":["a","b"],"groups":[]}' > $(dir $@)seed-4
	@printf '\007{"object":"commit_receipt","status":"HELD","notifications":[{"readAt":"1","currentValues":{"a":1}}],"record":{"createdAt":"2024-01-01T00:00:00.5Z"}}' > $(dir $@)seed-5
	@touch $@

$(BUILD)/fuzz/route-corpus/.seeded:
	@mkdir -p $(dir $@)
	@printf '\000/v1/models/students/s%%201' > $(dir $@)seed-1
	@printf '\001/v1/models/m/a%%3Ab:claim' > $(dir $@)seed-2
	@printf '\002/v1/schema' > $(dir $@)seed-3
	@printf '\004/v1/models/m' > $(dir $@)seed-4
	@touch $@

# --- container image and Kubernetes manifests (tests/image/, README "Deploy") --
# Debian's buildah/podman/runc/debootstrap build and run the image without a
# Docker engine; kubernetes-client provides `kubectl kustomize` when no
# kubectl is installed. Only `make image-test` needs them.
IMAGE_PKGS := buildah podman runc debootstrap python3-yaml openssl

.PHONY: image-deps image-test
image-deps: deps
	@missing=$$(for p in $(IMAGE_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done; \
	  command -v kubectl >/dev/null || echo kubernetes-client); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages (run as root or install): $$missing"; exit 1; fi; \
	fi

image-test: image-deps
	PYTHON=$(PYTHON) bash tests/image/manifests.sh
	PYTHON=$(PYTHON) bash tests/image/run.sh
