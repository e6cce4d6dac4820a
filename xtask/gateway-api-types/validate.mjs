// Validates the Gateway API objects of Tollgate's examples and docs against the Gateway API's
// own schemas (the validators @kubernetes-models/gateway-api generates from them: types,
// required fields, enumerations, patterns, lengths and counts). Run by `cargo xtask test`
// (xtask/src/gateway_api.rs) in the directory npm installed the package into.
//
//     node validate.mjs OBJECTS.json
//
// OBJECTS.json: [{"where": "file:line", "object": {...}}, ...], written by validate_crs.py.
// Prints one line per problem (where, kind/name, field, message), then `N passed, N failed`;
// exits 1 on any problem, or when there is nothing to check.
import { readFileSync } from "node:fs";

const found = JSON.parse(readFileSync(process.argv[2], "utf8"));
let passed = 0;
let failed = 0;
for (const { where, object } of found) {
  const label = `${where}: ${object.kind}/${object.metadata?.name ?? "?"}`;
  let Model;
  try {
    const module = await import(`@kubernetes-models/gateway-api/${object.apiVersion}/${object.kind}`);
    Model = module[object.kind];
  } catch {
    Model = undefined;
  }
  if (!Model) {
    console.log(`${label}: the Gateway API has no ${object.kind} in ${object.apiVersion}`);
    failed += 1;
    continue;
  }
  try {
    new Model(object).validate();
    passed += 1;
  } catch (error) {
    console.log(`${label}: ${error.message ?? error}`);
    failed += 1;
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed || !passed ? 1 : 0);
