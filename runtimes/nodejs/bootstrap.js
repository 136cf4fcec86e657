'use strict';
// Wisp's managed Node.js runtime.
//
// The server starts this file as `node /var/runtime/bootstrap.js` inside a sandbox, with the
// function's code at $LAMBDA_TASK_ROOT and the Runtime API at $AWS_LAMBDA_RUNTIME_API. It
// loads the handler named by $_HANDLER (`file.export`, `dir/file.export`, the file being
// .js, .mjs or .cjs) once, then loops: fetch the next event, call the handler, post the
// result or the error in the shapes Lambda's own Node.js runtime uses. Handlers may be
// async (return a promise), callback-style `(event, context, callback)`, or plain functions.
//
// Response streaming works as in Lambda: a handler wrapped in `awslambda.streamifyResponse`
// receives `(event, responseStream, context)` and writes to the stream, which is posted to the
// Runtime API in its streaming mode (a chunked body); a failure after the stream has started
// travels in the HTTP trailers `Lambda-Runtime-Function-Error-Type` / `-Body`.
// `awslambda.HttpResponseStream.from(stream, metadata)` writes the JSON metadata prelude and the
// eight NUL bytes that Lambda's HTTP integrations read.
//
// Shutdown hooks (Wisp's own, see docs/SHUTDOWN.md): a function registers
// `globalThis.wisp.onShutdown(async (reason) => {...})`; when the instance is stopped the runtime
// gets SIGTERM, reads the reason (`spindown`, `timeout` or `failure`) and deadline from the Runtime
// API's `/runtime/wisp/shutdown`, awaits every hook in order, says `/runtime/wisp/shutdown/done`
// and exits 0. Without hooks it exits at once.
//
// Differences from Lambda's runtime, on purpose:
// - a callback's result is posted as soon as the callback is called (as if
//   `context.callbackWaitsForEmptyEventLoop` were false), instead of waiting for the event
//   loop to drain;
// - a plain (non-async, two-argument) handler's return value, when it is not undefined, is
//   the result, where Lambda would ignore it;
// - a streaming handler that settles without ending its stream has the stream ended for it,
//   where Lambda's would leave the invocation waiting until it times out.

const http = require('http');
const path = require('path');
const fs = require('fs');
const util = require('util');

const RUNTIME_PREFIX = '/2018-06-01/runtime';

// How `awslambda.streamifyResponse` marks a handler, with the symbol Lambda's runtime uses.
const HANDLER_STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HANDLER_HIGHWATERMARK = Symbol.for('aws.lambda.runtime.handler.highWaterMark');
const STREAM_RESPONSE = 'response';
const HTTP_INTEGRATION_CONTENT_TYPE = 'application/vnd.awslambda.http-integration-response';

// The `awslambda` global that Lambda's Node.js runtime gives functions.
globalThis.awslambda = {
  streamifyResponse(handler, options) {
    handler[HANDLER_STREAMING] = STREAM_RESPONSE;
    if (options && typeof options.highWaterMark === 'number') {
      handler[HANDLER_HIGHWATERMARK] = options.highWaterMark;
    }
    return handler;
  },
  HttpResponseStream: class HttpResponseStream {
    // Writes `metadata` (status code, headers, cookies) as a JSON prelude and eight NUL bytes
    // before the first chunk, as HTTP integrations of streamed responses expect.
    static from(stream, metadata) {
      stream.setContentType(HTTP_INTEGRATION_CONTENT_TYPE);
      const prelude = JSON.stringify(metadata);
      stream._onBeforeFirstWrite = (write) => {
        write(prelude);
        write(new Uint8Array(8));
      };
      return stream;
    }
  },
};

// Wisp's own global: shutdown hooks, run in the order they were registered.
const shutdownHooks = [];
globalThis.wisp = {
  // Registers `hook(reason)` (it may be async: it is awaited) to run when the instance is stopped.
  onShutdown(hook) {
    if (typeof hook !== 'function') {
      throw new TypeError(`wisp.onShutdown expects a function, got ${typeof hook}`);
    }
    shutdownHooks.push(hook);
    return hook;
  },
  // While hooks run: when the runtime will be killed, in milliseconds since the epoch.
  shutdownDeadlineMs: undefined,
};

class RuntimeClient {
  constructor(address) {
    const separator = address.lastIndexOf(':');
    if (separator <= 0) {
      throw new Error(`AWS_LAMBDA_RUNTIME_API must be host:port, got ${JSON.stringify(address)}`);
    }
    this.hostname = address.slice(0, separator).replace(/^\[(.*)\]$/, '$1');
    this.port = Number(address.slice(separator + 1));
    // One keep-alive connection: the Runtime API is called strictly in sequence.
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  }

  request(method, requestPath, body, headers) {
    return new Promise((resolve, reject) => {
      const options = {
        method,
        hostname: this.hostname,
        port: this.port,
        path: requestPath,
        agent: this.agent,
        headers: Object.assign({}, headers),
      };
      if (body !== undefined) {
        options.headers['Content-Type'] = 'application/json';
        options.headers['Content-Length'] = Buffer.byteLength(body);
      }
      const request = http.request(options, (response) => {
        const chunks = [];
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('end', () => resolve({
          status: response.statusCode,
          headers: response.headers,
          raw: Buffer.concat(chunks),
          get body() { return this.raw.toString('utf8'); },
        }));
        response.on('error', reject);
      });
      request.on('error', reject);
      request.end(body);
    });
  }

  async nextInvocation() {
    const response = await this.request('GET', `${RUNTIME_PREFIX}/invocation/next`);
    if (response.status !== 200) {
      throw new Error(`GET /runtime/invocation/next answered ${response.status}: ${response.body}`);
    }
    return response;
  }

  postResponse(requestId, body) {
    return this.post(`${RUNTIME_PREFIX}/invocation/${requestId}/response`, body, {});
  }

  postError(requestId, error, errorType) {
    return this.post(`${RUNTIME_PREFIX}/invocation/${requestId}/error`, JSON.stringify(error), {
      'Lambda-Runtime-Function-Error-Type': errorType,
    });
  }

  postInitError(error) {
    return this.post(`${RUNTIME_PREFIX}/init/error`, JSON.stringify(error), {
      'Lambda-Runtime-Function-Error-Type': error.errorType,
    });
  }

  // Opens a streaming response: a chunked POST whose failure, if any, goes in its trailers.
  // Resolves `done` once the Runtime API has answered the whole post.
  openResponseStream(requestId, options) {
    let resolveDone;
    const done = new Promise((resolve) => { resolveDone = resolve; });
    const request = http.request({
      method: 'POST',
      hostname: this.hostname,
      port: this.port,
      path: `${RUNTIME_PREFIX}/invocation/${requestId}/response`,
      agent: this.agent,
      highWaterMark: options.highWaterMark,
      headers: {
        'Lambda-Runtime-Function-Response-Mode': 'streaming',
        'Transfer-Encoding': 'chunked',
        Trailer: 'Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body',
        'Content-Type': 'application/octet-stream',
      },
    }, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('end', () => {
        if (response.statusCode >= 300) {
          writeLog(`Runtime API refused the streamed response (${response.statusCode}): ${Buffer.concat(chunks).toString('utf8')}`);
        }
        resolveDone();
      });
      response.on('error', () => resolveDone());
    });
    request.on('error', (error) => {
      writeLog(`streamed response failed: ${error.message}`);
      resolveDone();
    });
    return { request, done };
  }

  async post(requestPath, body, headers) {
    const response = await this.request('POST', requestPath, body, headers);
    if (response.status >= 300) {
      // The invocation may have timed out meanwhile; the server decides what comes next.
      writeLog(`Runtime API refused POST ${requestPath} (${response.status}): ${response.body}`);
    }
  }
}

// Errors raised while loading the handler, with Lambda's error type names.
class InitFailure extends Error {
  constructor(errorType, message, cause) {
    super(message);
    this.errorType = errorType;
    this.cause = cause;
  }
}

function writeLog(line) {
  process.stdout.write(line.endsWith('\n') ? line : `${line}\n`);
}

// The shape of an error in a Runtime API body, as Lambda's Node.js runtime builds it.
function errorBody(error) {
  try {
    if (util.types.isNativeError(error) || (error instanceof Error)) {
      return {
        errorType: error.name,
        errorMessage: error.message,
        trace: typeof error.stack === 'string' ? error.stack.split('\n') : [],
      };
    }
    return {
      errorType: typeof error,
      errorMessage: error === undefined || error === null ? String(error) : error.toString(),
      trace: [],
    };
  } catch (_) {
    return {
      errorType: 'handled',
      errorMessage: 'the handler failed with a value whose message, name or stack could not be read',
      trace: [],
    };
  }
}

let currentRequestId = undefined;

// Lambda prefixes each console line with a timestamp, the request id and the level.
function patchConsole() {
  const levels = { log: 'INFO', info: 'INFO', warn: 'WARN', error: 'ERROR', debug: 'DEBUG', trace: 'TRACE' };
  for (const [method, level] of Object.entries(levels)) {
    console[method] = (...args) => {
      let message = util.format(...args);
      if (method === 'trace') {
        message = `Trace: ${message}\n${new Error().stack.split('\n').slice(2).join('\n')}`;
      }
      const requestId = currentRequestId === undefined ? 'undefined' : currentRequestId;
      writeLog(`${new Date().toISOString()}\t${requestId}\t${level}\t${message}`);
    };
  }
}

async function loadModule(taskRoot, moduleSpec) {
  const base = path.resolve(taskRoot, moduleSpec);
  for (const extension of ['.js', '.mjs', '.cjs']) {
    const file = base + extension;
    if (!fs.existsSync(file)) {
      continue;
    }
    if (extension === '.mjs') {
      return import(require('url').pathToFileURL(file).href);
    }
    try {
      return require(file);
    } catch (error) {
      // A .js file in a package with "type": "module" is an ES module.
      if (error && error.code === 'ERR_REQUIRE_ESM') {
        return import(require('url').pathToFileURL(file).href);
      }
      throw error;
    }
  }
  // Not a file in the task root: a package from its node_modules, as Lambda allows.
  const resolved = require.resolve(moduleSpec, { paths: [taskRoot] });
  return require(resolved);
}

// The handler a routed event goes to (the `wisp-handler` header), loaded on first use; undefined when
// it cannot be loaded (the invocation has then failed with the reason).
async function routedHandler(client, routed, fallback, taskRoot, headers) {
  const spec = headers['wisp-handler'];
  if (!spec) {
    return fallback;
  }
  if (!routed.has(spec)) {
    try {
      routed.set(spec, await loadHandler(taskRoot, spec));
    } catch (error) {
      const requestId = headers['lambda-runtime-aws-request-id'];
      const body = error instanceof InitFailure
        ? { errorType: error.errorType, errorMessage: error.message, trace: [] }
        : errorBody(error);
      writeLog(`${new Date().toISOString()}\t${requestId}\tERROR\tInvoke Error \t${JSON.stringify(body)}`);
      await client.postError(requestId, body, body.errorType);
      return undefined;
    }
  }
  return routed.get(spec);
}

async function loadHandler(taskRoot, handlerSpec) {
  const slash = handlerSpec.lastIndexOf('/');
  const directory = handlerSpec.slice(0, slash + 1);
  const rest = handlerSpec.slice(slash + 1);
  const dot = rest.indexOf('.');
  if (dot <= 0 || dot === rest.length - 1) {
    throw new InitFailure('Runtime.MalformedHandlerName', `Bad handler ${handlerSpec}: expected file.export`);
  }
  if (/(^|\/)\.\.(\/|$)/.test(directory)) {
    throw new InitFailure('Runtime.MalformedHandlerName',
      `'${handlerSpec}' is not a valid handler name: it may not leave the task root`);
  }
  const moduleSpec = directory + rest.slice(0, dot);
  const exportPath = rest.slice(dot + 1);

  let loaded;
  try {
    loaded = await loadModule(taskRoot, moduleSpec);
  } catch (error) {
    if (error instanceof SyntaxError) {
      throw new InitFailure('Runtime.UserCodeSyntaxError', `${error.name}: ${error.message}`, error);
    }
    if (error && (error.code === 'MODULE_NOT_FOUND' || error.code === 'ERR_MODULE_NOT_FOUND')) {
      throw new InitFailure('Runtime.ImportModuleError', `Error: Cannot find module '${moduleSpec}'`, error);
    }
    throw error;
  }

  let handler = loaded;
  for (const part of exportPath.split('.')) {
    handler = handler === undefined || handler === null ? undefined : handler[part];
  }
  if (handler === undefined) {
    throw new InitFailure('Runtime.HandlerNotFound', `${moduleSpec}.${exportPath} is undefined or not exported`);
  }
  if (typeof handler !== 'function') {
    throw new InitFailure('Runtime.HandlerNotFound', `${moduleSpec}.${exportPath} is not a function`);
  }
  return handler;
}

function parseJsonHeader(value) {
  if (!value) {
    return undefined;
  }
  try {
    return JSON.parse(value);
  } catch (_) {
    return undefined;
  }
}

function makeContext(headers, settle) {
  const environment = process.env;
  const deadlineMs = Number(headers['lambda-runtime-deadline-ms']) || 0;
  const context = {
    callbackWaitsForEmptyEventLoop: true,
    functionName: environment.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: environment.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    memoryLimitInMB: environment.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    logGroupName: environment.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: environment.AWS_LAMBDA_LOG_STREAM_NAME,
    getRemainingTimeInMillis: () => Math.max(0, deadlineMs - Date.now()),
    succeed: (result) => settle(undefined, result),
    fail: (error) => settle(error === undefined || error === null ? 'handled' : error),
    done: (error, result) => settle(error, result),
  };
  const identity = parseJsonHeader(headers['lambda-runtime-cognito-identity']);
  if (identity !== undefined) {
    context.identity = identity;
  }
  const clientContext = parseJsonHeader(headers['lambda-runtime-client-context']);
  if (clientContext !== undefined) {
    context.clientContext = clientContext;
  }
  return context;
}

// Calls the handler and resolves to {error} or {result}, whichever way the handler answers.
function callHandler(handler, event, headers) {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (error, result) => {
      if (settled) {
        return;
      }
      settled = true;
      if (error !== undefined && error !== null) {
        resolve({ error });
      } else {
        resolve({ result });
      }
    };
    const context = makeContext(headers, settle);
    const callback = (error, result) => settle(error, result);
    currentInvocation = { settle };
    let returned;
    try {
      returned = handler(event, context, callback);
    } catch (error) {
      settle(error === undefined || error === null ? 'handled' : error);
      return;
    }
    if (returned && typeof returned.then === 'function') {
      returned.then(
        (result) => settle(undefined, result),
        (error) => settle(error === undefined || error === null ? 'handled' : error),
      );
    } else if (returned !== undefined && handler.length < 3) {
      settle(undefined, returned);
    }
    // Otherwise the handler answers through its callback or the context, or with null
    // once the event loop has nothing left to do (see 'beforeExit' in main).
  });
}

let currentInvocation = undefined;

async function invoke(client, handler, response) {
  const headers = response.headers;
  const requestId = headers['lambda-runtime-aws-request-id'];
  currentRequestId = requestId;
  if (headers['lambda-runtime-trace-id']) {
    process.env._X_AMZN_TRACE_ID = headers['lambda-runtime-trace-id'];
  } else {
    delete process.env._X_AMZN_TRACE_ID;
  }

  let event;
  try {
    if ((headers['content-type'] || '').startsWith('application/x-protobuf')) {
      // The signature asks for binary protobuf: the handler gets the bytes as a Buffer.
      event = response.raw;
    } else {
      event = response.raw.length === 0 ? {} : JSON.parse(response.body);
    }
  } catch (error) {
    const body = { errorType: 'Runtime.UnmarshalError', errorMessage: `Unable to parse the event: ${error.message}`, trace: [] };
    writeLog(`${new Date().toISOString()}\t${requestId}\tERROR\tInvoke Error \t${JSON.stringify(body)}`);
    await client.postError(requestId, body, 'Runtime.UnmarshalError');
    return;
  }

  if (handler[HANDLER_STREAMING] === STREAM_RESPONSE) {
    await invokeStreaming(client, handler, event, headers, requestId);
    return;
  }

  const outcome = await callHandler(handler, event, headers);
  currentInvocation = undefined;
  if ('error' in outcome) {
    const body = errorBody(outcome.error);
    writeLog(`${new Date().toISOString()}\t${requestId}\tERROR\tInvoke Error \t${JSON.stringify(body)}`);
    await client.postError(requestId, body, 'Unhandled');
    return;
  }
  if (outcome.result instanceof Uint8Array) {
    // Bytes go out as they are (a binary protobuf result).
    await client.postResponse(requestId, Buffer.from(outcome.result.buffer, outcome.result.byteOffset, outcome.result.byteLength));
    return;
  }
  let payload;
  try {
    payload = JSON.stringify(outcome.result === undefined ? null : outcome.result);
  } catch (error) {
    const body = { errorType: 'Runtime.MarshalError', errorMessage: `Unable to stringify response body: ${error.message}`, trace: [] };
    writeLog(`${new Date().toISOString()}\t${requestId}\tERROR\tInvoke Error \t${JSON.stringify(body)}`);
    await client.postError(requestId, body, 'Runtime.MarshalError');
    return;
  }
  await client.postResponse(requestId, payload === undefined ? 'null' : payload);
}

// The writable stream a streaming handler writes its response to: the chunked request itself,
// with `setContentType` and the hook `HttpResponseStream.from` uses to write its prelude.
function responseStreamFor(request) {
  let started = false;
  const stream = request;
  const start = () => {
    if (!started) {
      started = true;
      if (typeof stream._onBeforeFirstWrite === 'function') {
        stream._onBeforeFirstWrite((chunk) => originalWrite(chunk));
      }
    }
  };
  const originalWrite = request.write.bind(request);
  const originalEnd = request.end.bind(request);
  stream.setContentType = (contentType) => {
    if (started) {
      throw new Error('Cannot set content-type, too late.');
    }
    request.setHeader('Content-Type', contentType);
  };
  stream.write = (chunk, encoding, callback) => {
    if (typeof chunk !== 'string' && !Buffer.isBuffer(chunk) && !(chunk instanceof Uint8Array)) {
      chunk = JSON.stringify(chunk);
    }
    start();
    return originalWrite(chunk, encoding, callback);
  };
  stream.end = (chunk, encoding, callback) => {
    if (typeof chunk === 'function') {
      callback = chunk;
      chunk = undefined;
    }
    if (chunk !== undefined && chunk !== null) {
      stream.write(chunk, encoding);
    } else {
      start();
    }
    return originalEnd(callback);
  };
  return stream;
}

async function invokeStreaming(client, handler, event, headers, requestId) {
  const { request, done } = client.openResponseStream(requestId, {
    highWaterMark: handler[HANDLER_HIGHWATERMARK],
  });
  const responseStream = responseStreamFor(request);
  const outcome = await new Promise((resolve) => {
    let settled = false;
    const settle = (value) => {
      if (!settled) {
        settled = true;
        resolve(value);
      }
    };
    const context = makeContext(headers, (error) => settle(error ? { error } : {}));
    currentInvocation = { settle: () => settle({}) };
    let returned;
    try {
      returned = handler(event, responseStream, context);
    } catch (error) {
      settle({ error: error === undefined || error === null ? 'handled' : error });
      return;
    }
    if (returned && typeof returned.then === 'function') {
      returned.then(
        () => settle({}),
        (error) => settle({ error: error === undefined || error === null ? 'handled' : error }),
      );
    } else {
      settle({ error: new Error('Streaming does not support non-async handlers.') });
    }
  });
  currentInvocation = undefined;
  if ('error' in outcome) {
    const body = errorBody(outcome.error);
    writeLog(`${new Date().toISOString()}\t${requestId}\tERROR\tInvoke Error \t${JSON.stringify(body)}`);
    if (!request.writableEnded) {
      request.addTrailers({
        'Lambda-Runtime-Function-Error-Type': body.errorType,
        'Lambda-Runtime-Function-Error-Body': Buffer.from(JSON.stringify(body)).toString('base64'),
      });
      responseStream.end();
    }
  } else if (!request.writableEnded) {
    responseStream.end();
  }
  await done;
}

// Runs the registered shutdown hooks, each awaited, between the Runtime API's notice and done.
async function runShutdownHooks(address) {
  if (shutdownHooks.length === 0) {
    return;
  }
  // A connection of its own: the runtime's one may be waiting for the next invocation.
  const client = new RuntimeClient(address);
  let notice = { reason: 'spindown' };
  try {
    const response = await client.request('POST', `${RUNTIME_PREFIX}/wisp/shutdown`, '');
    if (response.status === 200) {
      notice = JSON.parse(response.body);
    } else {
      writeLog(`Runtime API refused POST ${RUNTIME_PREFIX}/wisp/shutdown (${response.status}): ${response.body}`);
    }
  } catch (error) {
    writeLog(`bootstrap: cannot read the shutdown notice: ${error.message}`);
  }
  globalThis.wisp.shutdownDeadlineMs = notice.deadlineMs;
  currentRequestId = notice.requestId;
  let failedType;
  for (const hook of shutdownHooks) {
    try {
      await hook(notice.reason);
    } catch (error) {
      const body = errorBody(error);
      writeLog(`${new Date().toISOString()}\t${currentRequestId}\tERROR\tShutdown hook failed \t${JSON.stringify(body)}`);
      failedType = failedType || body.errorType;
    }
  }
  const done = failedType ? JSON.stringify({ errorType: failedType }) : '';
  await client.request('POST', `${RUNTIME_PREFIX}/wisp/shutdown/done`, done).catch(() => {});
}

async function main() {
  const address = process.env.AWS_LAMBDA_RUNTIME_API;
  if (!address) {
    process.stderr.write('bootstrap: AWS_LAMBDA_RUNTIME_API is not set\n');
    process.exit(1);
  }
  const client = new RuntimeClient(address);
  const taskRoot = process.env.LAMBDA_TASK_ROOT || '/var/task';
  patchConsole();

  // An error thrown outside the handler's own call chain ends the instance, as in Lambda:
  // the current invocation (or the init) is reported failed and the process exits.
  const fatal = (error, errorType) => {
    const body = errorBody(error);
    if (errorType) {
      body.errorType = errorType;
    }
    writeLog(`${new Date().toISOString()}\t${currentRequestId}\tERROR\t${errorType || 'Uncaught Exception'} \t${JSON.stringify(body)}`);
    const report = currentInvocation
      ? client.postError(currentRequestId, body, 'Unhandled')
      : client.postInitError(body);
    report.catch(() => {}).finally(() => process.exit(129));
  };
  process.on('uncaughtException', (error) => fatal(error));
  process.on('unhandledRejection', (reason) => fatal(reason, 'Runtime.UnhandledPromiseRejection'));
  // A handler that neither returns a value nor calls back answers null once it has nothing
  // left to do, as Lambda's does; without this the process would simply exit.
  process.on('beforeExit', () => {
    if (currentInvocation) {
      currentInvocation.settle(undefined, null);
    }
  });

  // Pid 1 of its sandbox sees SIGTERM only because this handler exists.
  let stopping = false;
  process.on('SIGTERM', () => {
    if (stopping) {
      return;
    }
    stopping = true;
    runShutdownHooks(address).finally(() => process.exit(0));
  });

  let handler;
  try {
    handler = await loadHandler(taskRoot, process.env._HANDLER || '');
  } catch (error) {
    const body = error instanceof InitFailure
      ? { errorType: error.errorType, errorMessage: error.message, trace: error.cause ? errorBody(error.cause).trace : [] }
      : errorBody(error);
    writeLog(`${new Date().toISOString()}\tundefined\tERROR\tInit Error \t${JSON.stringify(body)}`);
    await client.postInitError(body);
    process.exit(1);
  }

  const routed = new Map();
  for (;;) {
    const response = await client.nextInvocation();
    const chosen = await routedHandler(client, routed, handler, taskRoot, response.headers);
    if (chosen !== undefined) {
      await invoke(client, chosen, response);
    }
  }
}

main().catch((error) => {
  process.stderr.write(`bootstrap: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
