# Makefile - builds, tests and runs the suite. `make help` lists the targets.

SANITIZER ?=
ifeq ($(SANITIZER),)
BUILD ?= build
else
BUILD ?= build-san
endif

CC ?= cc
# V=1 shows every command
V ?=
Q := $(if $(V),,@)
PKGS := libzmq libczmq libprotobuf-c libpq jansson
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS := $(shell pkg-config --libs $(PKGS)) -lev

WARNINGS := -Wall -Wextra -Werror -Wstrict-prototypes -Wmissing-prototypes -Wshadow \
            -Wpointer-arith -Wcast-qual
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARNINGS) $(CFLAGS) $(PKG_CFLAGS) -Iservices/common/tests \
              -Iservices/common -isystem $(BUILD)/gen
LDFLAGS ?=
LDLIBS := $(PKG_LIBS) -lpthread

ifneq ($(SANITIZER),)
ALL_CFLAGS += -fsanitize=$(SANITIZER) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZER)
endif

PROTOS := $(wildcard proto/crm/v1/*.proto)
PB_C := $(patsubst proto/%.proto,$(BUILD)/gen/%.pb-c.c,$(PROTOS))
PB_H := $(PB_C:.c=.h)
PB_O := $(PB_C:.c=.o)

# libcrm
COMMON_SRC := $(wildcard services/common/*.c)
COMMON_O := $(patsubst %.c,$(BUILD)/obj/%.o,$(COMMON_SRC)) \
            $(BUILD)/gen/crm_registry.o $(BUILD)/gen/common_migrations.o $(PB_O)
LIBCRM := $(BUILD)/lib/libcrm.a

# Programs: name -> sources
BROKER_SRC := $(wildcard services/broker/*.c)
CONTACTS_SRC := $(wildcard services/contacts/*.c)
ORDERS_SRC := $(wildcard services/orders/*.c)
CRMCTL_SRC := $(wildcard tools/crmctl/*.c)

BINS := $(BUILD)/bin/crm-broker $(BUILD)/bin/crm-contacts $(BUILD)/bin/crmctl \
        $(if $(ORDERS_SRC),$(BUILD)/bin/crm-orders)

# Unit tests: services/<x>/tests/test_*.c, each linked with its service's
# objects except main.c
UNIT_SRC := $(wildcard services/*/tests/test_*.c)
UNIT_BINS := $(patsubst services/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

BENCH_SRC := $(wildcard tests/bench/*.c)
BENCH_BINS := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all test check unit e2e test-san run bench format format-check clean help deps FORCE
.SECONDARY:

all: $(BINS) $(UNIT_BINS) $(BENCH_BINS)

help:
	@echo "make            build every binary into $(BUILD)/"
	@echo "make test       unit tests and end-to-end suite, then both again under ASan+UBSan"
	@echo "make check      format-check and test"
	@echo "make unit       unit tests only;  make e2e: end-to-end suite only"
	@echo "make test-san   unit and end-to-end under SANITIZER=address,undefined"
	@echo "make run        private PostgreSQL, broker and services on this machine"
	@echo "make bench      benchmarks (not part of test)"
	@echo "make no-loss    100,000 branch events while orders is killed: nothing lost (part of test)"
	@echo "make compose-test   the docker compose deployment on this machine's Docker engine"
	@echo "make format / format-check    clang-format"
	@echo "make deps       install the Debian packages needed"

deps:
	deploy/install-deps.sh

# --- generated code -------------------------------------------------------
$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen
	$(Q)protoc-c --c_out=$(BUILD)/gen -Iproto $<

$(BUILD)/gen/crm_registry.c: $(PB_H) tools/gen-registry.sh
	$(Q)tools/gen-registry.sh $(PB_H) > $@.tmp && mv $@.tmp $@

# The names of every migration file, rewritten only when they change: a file removed or
# renamed (a checkout of another commit) must rebuild what embeds them, and time stamps alone
# do not show that
MIGRATION_FILES := $(sort $(wildcard services/*/migrations/*.sql))
$(BUILD)/gen/migrations.list: FORCE
	@mkdir -p $(dir $@)
	@echo '$(MIGRATION_FILES)' | cmp -s - $@ || echo '$(MIGRATION_FILES)' > $@
FORCE:

$(BUILD)/gen/common_migrations.c: $(wildcard services/common/migrations/*.sql) tools/embed-sql.sh \
                                  $(BUILD)/gen/migrations.list
	@mkdir -p $(dir $@)
	$(Q)tools/embed-sql.sh crm_common_migrations $(sort $(wildcard services/common/migrations/*.sql)) > $@.tmp && mv $@.tmp $@

$(BUILD)/gen/%_migrations.c: $(wildcard services/*/migrations/*.sql) tools/embed-sql.sh \
                             $(BUILD)/gen/migrations.list
	@mkdir -p $(dir $@)
	$(Q)tools/embed-sql.sh $*_migrations $(sort $(wildcard services/$*/migrations/*.sql)) > $@.tmp && mv $@.tmp $@

# --- objects --------------------------------------------------------------
$(BUILD)/gen/%.o: $(BUILD)/gen/%.c $(PB_H)
	@$(if $(V),true,echo "  CC      $@")
	$(Q)$(CC) $(ALL_CFLAGS) -Wno-missing-prototypes -c $< -o $@

$(BUILD)/obj/%.o: %.c $(PB_H) $(wildcard services/common/*.h)
	@mkdir -p $(dir $@)
	@$(if $(V),true,echo "  CC      $@")
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

$(LIBCRM): $(COMMON_O)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

# --- programs -------------------------------------------------------------
$(BUILD)/bin/crm-broker: $(patsubst %.c,$(BUILD)/obj/%.o,$(BROKER_SRC)) $(LIBCRM)
	@mkdir -p $(dir $@)
	@$(if $(V),true,echo "  CC      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bin/crm-contacts: $(patsubst %.c,$(BUILD)/obj/%.o,$(CONTACTS_SRC)) $(BUILD)/gen/contacts_migrations.o $(LIBCRM)
	@mkdir -p $(dir $@)
	@$(if $(V),true,echo "  CC      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bin/crm-orders: $(patsubst %.c,$(BUILD)/obj/%.o,$(ORDERS_SRC)) $(BUILD)/gen/orders_migrations.o $(LIBCRM)
	@mkdir -p $(dir $@)
	@$(if $(V),true,echo "  CC      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bin/crmctl: $(patsubst %.c,$(BUILD)/obj/%.o,$(CRMCTL_SRC)) $(LIBCRM)
	@mkdir -p $(dir $@)
	@$(if $(V),true,echo "  CC      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# A unit test links its own service's objects but main.c, and the service's
# migrations when it has any. (No % inside these: in a pattern rule it would
# stand for the stem.)
svc_of = $(firstword $(subst /, ,$1))
svc_objs = $(addprefix $(BUILD)/obj/,$(addsuffix .o,$(basename $(filter-out services/$1/main.c,$(wildcard services/$1/*.c)))))
svc_mig = $(if $(wildcard services/$1/migrations/*.sql),$(BUILD)/gen/$1_migrations.o)

.SECONDEXPANSION:
$(BUILD)/tests/%: services/%.c $(LIBCRM) $$(call svc_objs,$$(call svc_of,$$*)) $$(call svc_mig,$$(call svc_of,$$*)) \
                  $(wildcard services/common/tests/*.h)
	@mkdir -p $(dir $@)
	@$(if $(V),true,echo "  CC      $@")
	$(Q)$(CC) $(ALL_CFLAGS) -Iservices/$(call svc_of,$*) $(LDFLAGS) -o $@ $< $(filter %.o,$^) $(LIBCRM) $(LDLIBS)

$(BUILD)/bench/%: tests/bench/%.c tests/bench/bench.h $(LIBCRM)
	@mkdir -p $(dir $@)
	@$(if $(V),true,echo "  CC      $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LIBCRM) $(LDLIBS)

# --- tests ----------------------------------------------------------------
unit: $(UNIT_BINS)
	BUILD=$(BUILD) tests/run-unit.sh $(UNIT_BINS)

e2e: $(BINS)
	BUILD=$(BUILD) tests/run-e2e.sh

test-san:
	$(MAKE) SANITIZER=address,undefined unit e2e

test: all
	$(MAKE) unit e2e
	$(MAKE) test-san
	$(MAKE) no-loss

check: format-check test

bench: all
	BUILD=$(BUILD) tests/bench/run.sh

run: $(BINS)
	BUILD=$(BUILD) deploy/run-local.sh

FORMAT_FILES = $(shell git ls-files '*.c' '*.h')
format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf build build-san

# These include the broker's source to test the MDP client and worker against it
$(BUILD)/tests/common/tests/test_mdp: services/broker/broker.c services/broker/broker.h
$(BUILD)/bench/bench_broker: services/broker/broker.c services/broker/broker.h

# The suite under docker compose on this machine's engine (tests/compose/run.sh)
.PHONY: compose-test
compose-test: $(BUILD)/bin/crmctl
	BUILD=$(BUILD) tests/compose/run.sh
$(BUILD)/tests/common/tests/test_events: services/broker/broker.c services/broker/broker.h
$(BUILD)/tests/common/tests/test_consumer: services/broker/broker.c services/broker/broker.h
$(BUILD)/tests/common/tests/test_branch: services/broker/broker.c services/broker/broker.h

# 100,000 branch events while orders is killed and contacts stopped: nothing lost or doubled
.PHONY: no-loss
no-loss: $(BINS) $(BUILD)/bench/sim_branches
	BUILD=$(BUILD) tests/soak/no_loss.sh
