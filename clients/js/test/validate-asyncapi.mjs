// Validates an AsyncAPI document with the AsyncAPI parser; exits 1 and prints every
// error when it is not valid. Usage: node validate-asyncapi.mjs FILE
import { readFile } from 'node:fs/promises';
import { Parser } from '@asyncapi/parser';

const file = process.argv[2];
const text = await readFile(file, 'utf8');
const { document, diagnostics } = await new Parser().parse(text);
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics) {
  console.log(`${['error', 'warning', 'info', 'hint'][d.severity] ?? d.severity}: ${d.code}: ${d.message} at ${JSON.stringify(d.path)}`);
}
if (!document || errors.length > 0) {
  console.log(`invalid: ${errors.length} errors`);
  process.exit(1);
}
console.log(`valid: AsyncAPI ${document.version()}, ${document.allMessages().length} messages, ${document.allChannels().length} channels`);
