// Validates an AsyncAPI document with the AsyncAPI parser (the one the
// AsyncAPI CLI and Studio use) and prints it as JSON, references resolved,
// for the test to compare with what the forwarder sends.
//
//   node .ci/tools/check-asyncapi.mjs docs/forwarder.asyncapi.yaml
import { Parser, fromFile } from '@asyncapi/parser';

const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, path).parse();
const severities = ['error', 'warning', 'information', 'hint'];
let failed = !document;
for (const d of diagnostics) {
  const severity = severities[d.severity] ?? String(d.severity);
  if (d.severity === 0) failed = true;
  // Warnings are findings too: the document should have none.
  if (d.severity <= 1) {
    failed = true;
    console.error(`${path}: ${severity}: ${d.code}: ${d.message} at ${d.path.join('.')}`);
  }
}
if (failed) process.exit(1);
console.log(JSON.stringify(document.json()));
