// Validate AsyncAPI documents with the official parser (@asyncapi/parser).
// Usage: node validate.mjs FILE [FILE...]
// Prints every diagnostic on stderr; exits 1 when one has severity "error", 2 on bad usage.
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const SEVERITY = ["error", "warning", "information", "hint"];
const parser = new Parser();

async function validate(path) {
  const source = await readFile(path, "utf8");
  const { document, diagnostics } = await parser.parse(source, { source: path });
  for (const d of diagnostics) {
    const where = d.path && d.path.length ? d.path.join(".") : "(document)";
    console.error(`${path}: ${SEVERITY[d.severity] ?? d.severity}: ${d.code}: ${where}: ${d.message}`);
  }
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).length;
  if (errors || !document) {
    console.error(`${path}: ${errors} error(s), not a valid AsyncAPI document`);
    return false;
  }
  console.log(`${path}: valid AsyncAPI ${document.version()}`);
  return true;
}

async function main(paths) {
  if (!paths.length) {
    console.error("usage: node validate.mjs FILE [FILE...]");
    return 2;
  }
  let ok = true;
  for (const path of paths) ok = (await validate(path)) && ok;
  return ok ? 0 : 1;
}

process.exitCode = await main(process.argv.slice(2));
