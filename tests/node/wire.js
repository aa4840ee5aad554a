"use strict";
/*
 * What the scripts here share: a fetch that records every HTTP exchange and re-parses each
 * response with @flatfile/api's own serializers in strict mode (enum values and unions
 * checked), so wire differences are named field by field; and `step`, which runs one client
 * call, keeps its value or error and what the client warned about while parsing.
 */

const serializers = require("@flatfile/api/serialization");

const STRICT = {
  unrecognizedObjectKeys: "passthrough",
  allowUnrecognizedUnionMembers: false,
  allowUnrecognizedEnumValues: false,
  skipValidation: false,
  breadcrumbsPrefix: ["response"],
};

function recorder(baseUrl, schemaFor) {
  const exchanges = [];
  const basePath = new URL(baseUrl).pathname;
  // The client sends `Keep-Alive: timeout=200`, a connection header that Node's own fetch
  // (undici, Node 18+) refuses ("invalid keep-alive header": every call fails with "fetch
  // failed", whatever the server). Dropped here; undici keeps connections alive anyway.
  const nativeFetch = globalThis.fetch;
  globalThis.fetch = async (input, init = {}) => {
    if (init.headers && !(init.headers instanceof Headers)) {
      const { "Keep-Alive": _dropped, ...headers } = init.headers;
      init = { ...init, headers };
    }
    const response = await nativeFetch(input, init);
    const url = new URL(typeof input === "string" ? input : input.url);
    const method = (init.method || "GET").toUpperCase();
    const record = { method, path: url.pathname + url.search, status: response.status };
    const type = response.headers.get("content-type") || "";
    let body;
    if (type.startsWith("application/json")) {
      try {
        body = await response.clone().json();
      } catch {
        body = undefined;
      }
    }
    const schema = response.ok ? schemaFor(method, url.pathname.slice(basePath.length)) : null;
    if (schema && body !== undefined) {
      const parsed = schema.parse(body, STRICT);
      record.strictErrors = parsed.ok
        ? []
        : parsed.errors.map((e) => `${e.path.join(".")}: ${e.message}`);
    }
    exchanges.push(record);
    return response;
  };
  return exchanges;
}

function plain(value) {
  return JSON.parse(JSON.stringify(value ?? null));
}

function stepper() {
  const steps = [];
  let warnings = [];
  console.warn = (...args) => {
    warnings.push(args.map(String).join(" "));
  };
  async function step(name, fn) {
    warnings = [];
    const entry = { name };
    try {
      entry.value = plain(await fn());
      entry.ok = true;
    } catch (err) {
      entry.ok = false;
      entry.error = {
        statusCode: err.statusCode ?? null,
        body: err.body ?? null,
        message: String(err.message || err),
      };
    }
    entry.warnings = warnings;
    steps.push(entry);
    return entry;
  }
  return { steps, step };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

module.exports = { recorder, serializers, sleep, stepper };
