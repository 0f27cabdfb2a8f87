// Validate an AsyncAPI document with the official parser.
// Usage: node validate.mjs FILE
// Prints every diagnostic; exits 1 when one has severity "error", 2 on bad usage.
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const SEVERITY = ["error", "warning", "information", "hint"];

async function main(path) {
  if (!path) {
    console.error("usage: node validate.mjs FILE");
    return 2;
  }
  const source = await readFile(path, "utf8");
  const { document, diagnostics } = await new Parser().parse(source, { source: path });
  for (const d of diagnostics) {
    const where = d.path && d.path.length ? d.path.join(".") : "(document)";
    console.error(`${SEVERITY[d.severity] ?? d.severity}: ${d.code}: ${where}: ${d.message}`);
  }
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
  if (errors.length || !document) {
    console.error(`${path}: ${errors.length} error(s), not a valid AsyncAPI document`);
    return 1;
  }
  console.log(`${path}: valid AsyncAPI ${document.version()} (${diagnostics.length} non-error diagnostic(s))`);
  return 0;
}

process.exitCode = await main(process.argv[2]);
