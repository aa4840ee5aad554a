"use strict";
/*
 * Moves a CSV file through the server with Flatfile's own typed client, @flatfile/api:
 * files.upload, an extract job, sheets.list and records.get, an export job, files.download.
 *
 *   node data.js '{"baseUrl": "http://127.0.0.1:PORT/v1", "token": "pj_...",
 *                  "csvPath": "in.csv", "outPath": "out.csv"}'
 *
 * Prints ONE JSON object on stdout: {steps, exchanges, records} (see wire.js for steps and
 * exchanges; records: what records.get returned). The downloaded export is written to
 * `outPath`, for the caller to compare with `csvPath`.
 */

const fs = require("node:fs");
const { Readable } = require("node:stream");
const { FlatfileClient } = require("@flatfile/api");
const { recorder, serializers, sleep, stepper } = require("./wire");

const { baseUrl, token, csvPath, outPath } = JSON.parse(process.argv[2]);
const WAIT_MS = 60_000;

function responseSchema(method, rest) {
  if (rest === "/files" && method === "POST") return serializers.FileResponse;
  if (/^\/files\/[^/]+$/.test(rest) && method === "GET") return serializers.FileResponse;
  if (rest === "/sheets") return serializers.ListSheetsResponse;
  if (/^\/sheets\/[^/]+\/records$/.test(rest) && method === "GET") {
    return serializers.GetRecordsResponse;
  }
  if (rest === "/jobs" && method === "POST") return serializers.JobResponse;
  if (/^\/jobs\/[^/]+$/.test(rest) && method === "GET") return serializers.JobResponse;
  if (/^\/jobs\/[^/]+\/execute$/.test(rest)) return serializers.Success;
  return null;
}

const exchanges = recorder(baseUrl, responseSchema);
const { steps, step } = stepper();
const client = new FlatfileClient({ token, environment: baseUrl });
let records = null;

async function runJob(config) {
  const { data: job } = await client.jobs.create(config);
  await client.jobs.execute(job.id);
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const { data } = await client.jobs.get(job.id);
    const status = String(data.status).toLowerCase();
    if (["complete", "completed", "failed", "canceled"].includes(status)) return data;
    if (Date.now() > deadline) throw new Error(`job ${job.id} still ${data.status}`);
    await sleep(100);
  }
}

async function toBuffer(body) {
  if (Buffer.isBuffer(body)) return body;
  if (body instanceof Readable || typeof body?.pipe === "function") {
    const chunks = [];
    for await (const chunk of body) chunks.push(Buffer.from(chunk));
    return Buffer.concat(chunks);
  }
  if (typeof body?.arrayBuffer === "function") return Buffer.from(await body.arrayBuffer());
  if (typeof body?.getReader === "function") {
    return toBuffer(Readable.fromWeb(body));
  }
  throw new Error(`cannot read a download of type ${typeof body}`);
}

async function main() {
  const uploaded = await step("upload", async () =>
    await client.files.upload(fs.createReadStream(csvPath), {
      spaceId: "us_sp_local",
      environmentId: "us_env_local",
    }),
  );
  if (!uploaded.ok) return;
  const fileId = uploaded.value.data.id;
  await step("get-file", async () => await client.files.get(fileId));

  const extracted = await step("extract", async () =>
    await runJob({ type: "file", operation: "extract", source: fileId, trigger: "manual" }),
  );
  if (!extracted.ok) return;
  const workbookId = extracted.value.outcome && extracted.value.outcome.workbookId;
  const sheets = await step("sheets", async () => await client.sheets.list({ workbookId }));
  if (!sheets.ok || !sheets.value.data.length) return;
  const sheetId = sheets.value.data[0].id;
  const got = await step("records", async () => await client.records.get(sheetId));
  if (got.ok) records = got.value.data.records;

  const exported = await step("export", async () =>
    await runJob({ type: "sheet", operation: "export", source: sheetId }),
  );
  if (!exported.ok) return;
  const exportId = exported.value.outcome && exported.value.outcome.fileId;
  await step("download", async () => {
    const bytes = await toBuffer(await client.files.download(exportId));
    fs.writeFileSync(outPath, bytes);
    return { size: bytes.length };
  });
}

main()
  .catch((err) => {
    steps.push({ name: "script", ok: false, error: { message: String(err.stack || err) } });
  })
  .finally(() => {
    process.stdout.write(`${JSON.stringify({ steps, exchanges, records })}\n`);
  });
