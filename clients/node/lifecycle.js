#!/usr/bin/env node
// A gRPC client of stopcock.v1.PipelineService written in Node.js: it drives
// one pipeline through its lifecycle and checks the error model, printing one
// JSON line per check. No generated code: proto/ is loaded at run time.
//
//   node clients/node/lifecycle.js [ADDRESS] [--name NAME] [--wait SECONDS] [--timeout SECONDS]
//
// ADDRESS (host:port of the manager's gRPC port) defaults to the environment
// variable STOPCOCK_GRPC_ADDRESS. NAME defaults to a random unique name.
// --wait bounds each wait for a state (default 30 s); --timeout bounds the
// whole run (default 120 s). Exit status: 0 when every check passed, 1 when
// one failed (its line says why), 2 for a usage error or the overall timeout.
'use strict';

const crypto = require('node:crypto');
const path = require('node:path');
const { parseArgs } = require('node:util');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const REPO_PROTO = path.resolve(__dirname, '..', '..', 'proto');
// google/rpc/{status,error_details}.proto: vendored (Apache-2.0, googleapis).
const RPC_PROTO = path.join(__dirname, 'proto');
const PROGRAM = 'CREATE TABLE t (id INTEGER NOT NULL); CREATE VIEW v AS SELECT * FROM t;';
const DOMAIN = 'stopcock.dev';
const RPC_TIMEOUT_MS = 10_000; // bound of one call (a poll's call also stays within its wait)
const POLL_INTERVAL_MS = 50;

// ---------------------------------------------------------------- loading

// keepCase: fields keep their proto names (program_status, not programStatus).
// google/protobuf/*.proto (struct, timestamp, any, duration...) are never
// read from disk: protobufjs (under proto-loader) bundles the well-known
// types and resolves those imports to its bundled copies before consulting
// includeDirs, so includeDirs needs only proto/ (which also holds the
// vendored google/api/*.proto). Those bundled definitions spell their fields
// in camelCase whatever keepCase says, so with enums: String and oneofs: true
// a google.protobuf.Value holding null arrives as
// {nullValue: 'NULL_VALUE', kind: 'nullValue'}; fromValue() below reads
// every spelling.
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [REPO_PROTO],
};

function loadService() {
  const definition = protoLoader.loadSync('stopcock/v1/pipeline_service.proto', LOADER_OPTIONS);
  return grpc.loadPackageDefinition(definition).stopcock.v1.PipelineService;
}

// The rich error status is decoded with protobufjs directly: proto-loader
// describes messages for grpc-js but does not decode arbitrary bytes.
function loadErrorTypes() {
  const root = new protobuf.Root();
  root.loadSync(
    [
      path.join(RPC_PROTO, 'google', 'rpc', 'status.proto'),
      path.join(RPC_PROTO, 'google', 'rpc', 'error_details.proto'),
    ],
    { keepCase: true },
  );
  root.resolveAll();
  return {
    Status: root.lookupType('google.rpc.Status'),
    ErrorInfo: root.lookupType('google.rpc.ErrorInfo'),
  };
}

// ---------------------------------------------------------------- helpers

class CheckFailed extends Error {}

function ensure(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// A google.protobuf.Value as proto-loader hands it over -> a plain JS value.
// Undefined means "no Value at all" (field unset); null means null_value.
// Accepts both field spellings (keepCase or camelCase) and both oneof forms
// (with or without the virtual `kind` member), enums as strings or numbers.
const VALUE_KINDS = [
  ['null_value', 'nullValue'],
  ['number_value', 'numberValue'],
  ['string_value', 'stringValue'],
  ['bool_value', 'boolValue'],
  ['struct_value', 'structValue'],
  ['list_value', 'listValue'],
];

function fromValue(value) {
  if (value === null || value === undefined) return undefined;
  let kind = value.kind;
  if (kind === undefined) {
    const found = VALUE_KINDS.find(([s, c]) => value[s] != null || value[c] != null);
    kind = found && found[0];
  }
  const pair = VALUE_KINDS.find(([s, c]) => kind === s || kind === c);
  if (!pair) return undefined;
  const member = value[pair[0]] ?? value[pair[1]];
  switch (pair[0]) {
    case 'null_value':
      return null;
    case 'struct_value':
      return fromStruct(member);
    case 'list_value':
      return (member.values || []).map(fromValue);
    default:
      return member;
  }
}

function fromStruct(struct) {
  if (struct === null || struct === undefined) return undefined;
  return Object.fromEntries(
    Object.entries(struct.fields || {}).map(([key, value]) => [key, fromValue(value)]),
  );
}

function grpcCodeName(code) {
  return Object.keys(grpc.status).find((name) => grpc.status[name] === code) ?? String(code);
}

function describe(thing) {
  if (thing instanceof Error && typeof thing.code === 'number') {
    return `${grpcCodeName(thing.code)}: ${thing.details}`;
  }
  if (thing instanceof Error) return thing.message;
  return JSON.stringify(thing);
}

// ---------------------------------------------------------------- the client

class Checker {
  constructor(address, name, waitMs) {
    this.address = address;
    this.name = name;
    this.waitMs = waitMs;
    const Service = loadService();
    this.client = new Service(address, grpc.credentials.createInsecure());
    this.errorTypes = loadErrorTypes();
    this.passed = 0;
  }

  // One unary call with a deadline; resolves the response, rejects the
  // grpc-js ServiceError (code, details, metadata = the trailers).
  call(method, request, timeoutMs = RPC_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + timeoutMs);
      this.client[method](request, { deadline }, (err, response) => {
        if (err) reject(err);
        else resolve(response);
      });
    });
  }

  // Bounded poll of GetPipeline until `done(pipeline)`; `fatal(pipeline)` may
  // return a reason to give up at once (e.g. a compilation error). Transient
  // transport errors are retried until the deadline; other errors fail.
  async waitFor(what, done, fatal = () => null) {
    const deadline = Date.now() + this.waitMs;
    let last = null;
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new CheckFailed(
          `timed out after ${this.waitMs / 1000}s waiting for ${what}; last: ${describe(last)}`,
        );
      }
      try {
        const pipeline = await this.call(
          'GetPipeline',
          { name: this.name, selector: 'status' },
          Math.min(RPC_TIMEOUT_MS, remaining),
        );
        last = summary(pipeline);
        if (done(pipeline)) return pipeline;
        const reason = fatal(pipeline);
        if (reason) throw new CheckFailed(`while waiting for ${what}: ${reason}; last: ${describe(last)}`);
      } catch (err) {
        const transient = [grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED];
        if (!(err instanceof Error) || !transient.includes(err.code)) throw err;
        last = err;
      }
      await sleep(Math.min(POLL_INTERVAL_MS, Math.max(0, deadline - Date.now())));
    }
  }

  report(check, detail) {
    this.passed += 1;
    process.stdout.write(`${JSON.stringify({ check, ok: true, ...detail })}\n`);
  }

  // Runs `body`; prints its line (ok or the failure) and rethrows failures.
  async check(check, body) {
    const started = Date.now();
    try {
      const detail = (await body()) || {};
      this.report(check, { ...detail, ms: Date.now() - started });
    } catch (err) {
      const line = { check, ok: false, error: describe(err), ms: Date.now() - started };
      process.stdout.write(`${JSON.stringify(line)}\n`);
      throw err;
    }
  }

  // The rich status of a failed call: code, google.rpc.Status from
  // grpc-status-details-bin with its ErrorInfo, and x-stopcock-error.
  async expectError(method, request, code, reason) {
    let err = null;
    try {
      await this.call(method, request);
    } catch (caught) {
      err = caught;
    }
    ensure(err, `${method} succeeded; expected ${grpcCodeName(code)} ${reason}`);
    ensure(
      err.code === code,
      `${method}: status ${grpcCodeName(err.code)} (${err.details}); expected ${grpcCodeName(code)}`,
    );
    const bins = err.metadata ? err.metadata.get('grpc-status-details-bin') : [];
    ensure(bins.length === 1, `${method}: ${bins.length} grpc-status-details-bin trailers, expected 1`);
    const { Status, ErrorInfo } = this.errorTypes;
    const status = Status.decode(bins[0]);
    ensure(status.code === code, `google.rpc.Status code ${status.code} != gRPC code ${code}`);
    ensure(
      status.message === err.details,
      `google.rpc.Status message ${JSON.stringify(status.message)} != grpc-message ${JSON.stringify(err.details)}`,
    );
    const infos = status.details
      .filter((any) => any.type_url.endsWith('/google.rpc.ErrorInfo'))
      .map((any) => ErrorInfo.toObject(ErrorInfo.decode(any.value), { defaults: true }));
    ensure(
      infos.length === 1,
      `${infos.length} ErrorInfo in the status details (types: ${status.details.map((a) => a.type_url)})`,
    );
    const [info] = infos;
    ensure(info.reason === reason, `ErrorInfo.reason ${JSON.stringify(info.reason)}, expected ${reason}`);
    ensure(info.domain === DOMAIN, `ErrorInfo.domain ${JSON.stringify(info.domain)}, expected ${DOMAIN}`);
    const bodies = err.metadata.get('x-stopcock-error');
    ensure(bodies.length === 1, `${bodies.length} x-stopcock-error trailers, expected 1`);
    const body = JSON.parse(String(bodies[0]));
    ensure(
      body.error_code === reason && body.message === err.details,
      `x-stopcock-error ${String(bodies[0])} does not match ${reason} / ${err.details}`,
    );
    return {
      code: grpcCodeName(err.code),
      message: err.details,
      reason: info.reason,
      domain: info.domain,
      metadata: info.metadata,
    };
  }

  async run() {
    const { name } = this;

    await this.check('connect', async () => {
      await new Promise((resolve, reject) => {
        this.client.waitForReady(new Date(Date.now() + this.waitMs), (err) =>
          err ? reject(new CheckFailed(`cannot connect to ${this.address}: ${err.message}`)) : resolve(),
        );
      });
      const health = await this.call('CheckHealth', {});
      ensure(health.status === 'healthy', `CheckHealth answered ${JSON.stringify(health)}`);
      return { address: this.address };
    });

    await this.check('create', async () => {
      const created = await this.call('CreatePipeline', {
        pipeline: { name, program_code: PROGRAM },
      });
      ensure(created.name === name, `CreatePipeline returned name ${JSON.stringify(created.name)}`);
      const compiled = await this.waitFor(
        'program_status Success',
        (p) => p.program_status === 'Success',
        (p) => (/Error$/.test(p.program_status) ? `program_status ${p.program_status}` : null),
      );
      return { name, id: created.id, program_status: compiled.program_status };
    });

    await this.check('start', async () => {
      await this.call('StartPipeline', { name, initial: 'running' });
      this.started = true;
      const running = await this.waitFor(
        'deployment_status Running',
        (p) => p.deployment_status === 'Running',
        (p) => {
          const error = fromValue(p.deployment_error);
          return error ? `deployment_error ${JSON.stringify(error)}` : null;
        },
      );
      return { deployment_status: running.deployment_status };
    });

    await this.check('force_stop', async () => {
      await this.call('StopPipeline', { name, force: true });
      const stopped = await this.waitFor(
        'deployment_status Stopped',
        (p) => p.deployment_status === 'Stopped',
      );
      this.started = false;
      return { deployment_status: stopped.deployment_status };
    });

    await this.check('get', async () => {
      const p = await this.call('GetPipeline', { name });
      ensure(p.name === name, `name ${JSON.stringify(p.name)}, expected ${name}`);
      ensure(p.program_code === PROGRAM, `program_code ${JSON.stringify(p.program_code)}`);
      ensure(p.program_status === 'Success', `program_status ${p.program_status}`);
      ensure(p.deployment_status === 'Stopped', `deployment_status ${p.deployment_status}`);
      ensure(
        p.deployment_desired_status === 'Stopped',
        `deployment_desired_status ${p.deployment_desired_status}`,
      );
      // The contract prints these as JSON null: a Value holding null_value.
      for (const field of ['deployment_error', 'deployment_id', 'deployment_runtime_status']) {
        ensure(
          fromValue(p[field]) === null,
          `${field} is ${JSON.stringify(p[field])}, expected a Value holding null_value`,
        );
      }
      const info = fromValue(p.program_info);
      ensure(info && info.schema, `program_info ${JSON.stringify(info)} has no schema`);
      return {
        name: p.name,
        deployment_status: p.deployment_status,
        deployment_error: fromValue(p.deployment_error),
        created_at: p.created_at,
      };
    });

    await this.check('error_not_found', () =>
      this.expectError(
        'GetPipeline',
        { name: `${name}-unknown` },
        grpc.status.NOT_FOUND,
        'UnknownPipelineName',
      ).then((detail) => {
        const named = detail.metadata.pipeline_name;
        ensure(
          named !== undefined && JSON.parse(named) === `${name}-unknown`,
          `ErrorInfo.metadata.pipeline_name ${JSON.stringify(named)}`,
        );
        return detail;
      }),
    );

    await this.check('error_already_exists', () =>
      this.expectError(
        'CreatePipeline',
        { pipeline: { name, program_code: PROGRAM } },
        grpc.status.ALREADY_EXISTS,
        'DuplicateName',
      ),
    );

    await this.check('error_unimplemented', () =>
      this.expectError(
        'StartPipeline',
        { name, initial: 'suspended' },
        grpc.status.UNIMPLEMENTED,
        'UnsupportedPipelineAction',
      ),
    );
  }

  // After a failure: do not leave a runtime process behind (best effort, bounded).
  async cleanUp() {
    if (!this.started) return;
    try {
      await this.call('StopPipeline', { name: this.name, force: true }, 5_000);
    } catch {
      // Reported failure already; nothing more to do.
    }
  }

  close() {
    this.client.close();
  }
}

function summary(pipeline) {
  return {
    program_status: pipeline.program_status,
    deployment_status: pipeline.deployment_status,
    deployment_desired_status: pipeline.deployment_desired_status,
    deployment_error: fromValue(pipeline.deployment_error),
  };
}

// ---------------------------------------------------------------- main

function usage(message) {
  process.stderr.write(
    `${message}\nusage: node lifecycle.js [ADDRESS] [--name NAME] [--wait SECONDS] [--timeout SECONDS]\n` +
      '(ADDRESS defaults to $STOPCOCK_GRPC_ADDRESS)\n',
  );
  process.exit(2);
}

function seconds(text, option) {
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) usage(`${option} wants a positive number of seconds`);
  return value * 1000;
}

async function main() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        name: { type: 'string' },
        wait: { type: 'string', default: '30' },
        timeout: { type: 'string', default: '120' },
      },
    });
  } catch (err) {
    usage(err.message);
  }
  const { values, positionals } = parsed;
  if (positionals.length > 1) usage('too many arguments');
  const address = positionals[0] || process.env.STOPCOCK_GRPC_ADDRESS;
  if (!address) usage('no manager address: pass ADDRESS or set STOPCOCK_GRPC_ADDRESS');
  const name = values.name || `node-client-${crypto.randomBytes(6).toString('hex')}`;
  const waitMs = seconds(values.wait, '--wait');
  const timeoutMs = seconds(values.timeout, '--timeout');

  // The bound of the whole run, whatever happens.
  setTimeout(() => {
    const line = { check: 'overall', ok: false, error: `run exceeded ${timeoutMs / 1000}s` };
    process.stdout.write(`${JSON.stringify(line)}\n`);
    process.exit(2);
  }, timeoutMs).unref();

  const checker = new Checker(address, name, waitMs);
  let failure = null;
  try {
    await checker.run();
  } catch (err) {
    failure = err;
    await checker.cleanUp();
  } finally {
    checker.close();
  }
  const result = { summary: true, ok: failure === null, passed: checker.passed, pipeline: name };
  if (failure) {
    result.error = describe(failure);
    // A bug rather than a failed check: say where.
    if (!(failure instanceof CheckFailed) && typeof failure.code !== 'number') {
      result.stack = failure.stack;
    }
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exitCode = failure ? 1 : 0;
}

if (require.main === module) {
  main();
} else {
  module.exports = { fromValue, fromStruct, loadService, loadErrorTypes };
}
