// A typed client of one organisation's HTTP API: types generated from its
// GET /v1/openapi.json by openapi-typescript (./api.d.ts), calls made with
// openapi-fetch. Creates, patches (with If-Match) and reads a student and
// prints what it saw as JSON.
import createClient from "openapi-fetch";
import type { paths } from "./api.js";

const client = createClient<paths>({
  baseUrl: process.env.RECORDD_URL,
  headers: { Authorization: `Bearer ${process.env.RECORDD_KEY}` },
});

const created = await client.POST("/v1/models/students", {
  params: { query: { id: "ts-1" } },
  body: { firstName: "Ada", age: 36 },
});
if (created.error !== undefined) throw new Error(JSON.stringify(created.error));
const version: string | undefined = created.data?.version;

const patched = await client.PATCH("/v1/models/students/{id}", {
  params: { path: { id: "ts-1" }, header: { "If-Match": `"${version}"` } },
  body: { age: 37, status: "active" },
});
if (patched.error !== undefined) throw new Error(JSON.stringify(patched.error));

const got = await client.GET("/v1/models/students/{id}", { params: { path: { id: "ts-1" } } });
if (got.error !== undefined) throw new Error(JSON.stringify(got.error));
const age: number | null | undefined = got.data.data?.age;
const firstName: string | undefined = got.data.data?.firstName;

const stale = await client.PATCH("/v1/models/students/{id}", {
  params: { path: { id: "ts-1" }, header: { "If-Match": `"${version}"` } },
  body: { age: 38 },
});

console.log(
  JSON.stringify({
    created: created.response.status,
    patched: patched.response.status,
    version: got.data.version,
    age,
    firstName,
    stale: stale.response.status,
    staleCode: stale.error?.code,
  }),
);
