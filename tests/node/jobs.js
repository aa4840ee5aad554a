"use strict";
/*
 * Drives the /v1 jobs API with Flatfile's own typed client, @flatfile/api.
 *
 *   node jobs.js '{"baseUrl": "http://127.0.0.1:PORT/v1", "token": "pj_...",
 *                  "jobId": "...", "startedPath": "...", "releasePath": "..."}'
 *
 * `jobId` is a job made by the caller whose workflow marks its start by writing `startedPath`
 * and then waits (cancellably) until `releasePath` exists: the run can be canceled while it
 * executes, retried, and released. The client cannot make such a job itself: it strips every
 * key its `JobConfig` type does not know (`name`, `jobConfigJson`...) before sending. It
 * creates a plain Flatfile job instead (`type: file, operation: extract`), never executed.
 *
 * Prints ONE JSON object on stdout:
 *   steps      [{name, ok, value | error: {statusCode, body, message}, warnings}]
 *              warnings: what the client itself logged while parsing the response (it parses
 *              with skipValidation and console.warns every field that does not fit its types)
 *   exchanges  [{method, path, status, strictErrors}] every HTTP exchange, its response body
 *              parsed again with the client's serializers in strict mode (enum values and
 *              unions checked), so wire differences are named field by field
 *   statuses   the statuses of `jobId` seen while polling, in order
 *
 * A failing step does not end the script, so one run reports every incompatibility.
 */

const fs = require("node:fs");
const { FlatfileClient } = require("@flatfile/api");
const { recorder, serializers, sleep, stepper } = require("./wire");

const options = JSON.parse(process.argv[2]);
const { baseUrl, token, jobId, startedPath, releasePath } = options;
const POLL_MS = 100;
const WAIT_MS = 30_000;

// ----------------------------------------------------------------------------- recording

function responseSchema(method, rest) {
  if (rest === "/jobs") {
    return method === "GET" ? serializers.ListJobsResponse : serializers.JobResponse;
  }
  if (/^\/jobs\/[^/]+\/execute$/.test(rest)) return serializers.Success;
  if (/^\/jobs\/[^/]+\/(cancel|retry)$/.test(rest)) return serializers.JobResponse;
  if (/^\/jobs\/[^/]+$/.test(rest)) {
    return method === "DELETE" ? serializers.Success : serializers.JobResponse;
  }
  return null;
}

const exchanges = recorder(baseUrl, responseSchema);
const { steps, step } = stepper();

// ----------------------------------------------------------------------------- helpers

const client = new FlatfileClient({ token, environment: baseUrl });
const statuses = [];
const norm = (status) => String(status || "").toLowerCase();

async function pollJob(jobId, until, what) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const { data } = await client.jobs.get(jobId);
    if (statuses[statuses.length - 1] !== data.status) statuses.push(data.status);
    if (until(data)) return data;
    if (Date.now() > deadline) {
      throw new Error(`job ${jobId} not ${what} after ${WAIT_MS} ms (status ${data.status})`);
    }
    await sleep(POLL_MS);
  }
}

async function waitForFile(file) {
  const deadline = Date.now() + WAIT_MS;
  while (!fs.existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`${file} did not appear in ${WAIT_MS} ms`);
    await sleep(POLL_MS / 2);
  }
}

// ----------------------------------------------------------------------------- the scenario

async function main() {
  await step("list-before", async () => await client.jobs.list({ pageSize: 10 }));

  const created = await step("create", async () =>
    await client.jobs.create({
      type: "file",
      operation: "extract",
      source: "us_fl_0123abcd",
      config: { driver: "csv" },
      trigger: "manual",
      input: { delimiter: "," },
      metadata: { origin: "flatfile-client-test" },
    }),
  );
  const createdId = created.ok ? created.value.data.id : null;
  if (createdId) await step("get-created", async () => await client.jobs.get(createdId));

  await step("get", async () => await client.jobs.get(jobId));
  await step("update", async () =>
    await client.jobs.update(jobId, {
      metadata: { updatedBy: "flatfile-client-test" },
      info: "updated by the Flatfile client",
    }),
  );
  await step("list", async () =>
    await client.jobs.list({ pageSize: 10, pageNumber: 1, sortDirection: "asc" }),
  );

  await step("execute", async () => await client.jobs.execute(jobId));
  await step("wait-executing", async () => {
    await waitForFile(startedPath);
    return pollJob(jobId, (j) => norm(j.status) === "executing", "executing");
  });
  await step("cancel", async () =>
    await client.jobs.cancel(jobId, { info: "stopped by the Flatfile client" }),
  );
  await step("wait-canceled", async () =>
    pollJob(jobId, (j) => norm(j.status) === "canceled", "canceled"),
  );

  fs.rmSync(startedPath, { force: true });
  await step("retry", async () => await client.jobs.retry(jobId));
  await step("wait-retry-executing", async () => {
    await waitForFile(startedPath);
    return pollJob(jobId, (j) => norm(j.status) === "executing", "executing again");
  });
  fs.writeFileSync(releasePath, "go");
  await step("wait-completed", async () =>
    pollJob(jobId, (j) => ["complete", "completed"].includes(norm(j.status)), "completed"),
  );

  await step("delete", async () => await client.jobs.delete(jobId));
  if (createdId) await step("delete-created", async () => await client.jobs.delete(createdId));
  await step("get-deleted", async () => await client.jobs.get(jobId));
}

main()
  .catch((err) => {
    steps.push({ name: "script", ok: false, error: { message: String(err.stack || err) } });
  })
  .finally(() => {
    process.stdout.write(`${JSON.stringify({ steps, exchanges, statuses })}\n`);
  });
