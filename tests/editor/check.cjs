// Runs the recipe schema through what editors run: yaml-language-server's language service and
// ajv's draft-07 validator. Reads a JSON request on stdin, writes the findings as JSON;
// tests/test_editor_schema.py judges them. No network: the schema is served from the file.
//
// request:  {schema: "path/to/recipe.schema.json", modeline: bool,
//            cases: [{name, text, documents: [parsed documents], hovers: [[line, character], ...]}]}
//   modeline true: the recipe gets the README's `# yaml-language-server: $schema=<$id>` first
//   line and the server fetches the schema by that URL; false: the schema is associated with
//   every *.yaml file, as VS Code's `yaml.schemas` setting does.
//   line: the recipe's own line, 1-based; character: 0-based.
// response: {meta_errors: [...], cases: [{name, ajv: [[errors of doc 0], ...],
//            diagnostics: [{line, severity, source, message}], hovers: ["markdown" | null, ...]}]}
"use strict";

const fs = require("fs");
const Ajv = require("ajv");
const { TextDocument } = require("vscode-languageserver-textdocument");
const { getLanguageService } = require("yaml-language-server/lib/umd/languageservice/yamlLanguageService");

async function main() {
  const request = JSON.parse(fs.readFileSync(0, "utf8"));
  const schemaText = fs.readFileSync(request.schema, "utf8");
  const schema = JSON.parse(schemaText);
  const url = schema.$id;

  // ajv in strict mode also refuses unknown keywords and ambiguous types, beyond the meta-schema.
  const ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false });
  const metaErrors = ajv.validateSchema(schema) ? [] : ajv.errors;
  const validate = ajv.compile(schema);

  const service = getLanguageService({
    schemaRequestService: async (uri) => {
      if (uri === url) return schemaText;
      throw new Error(`no network in this check: ${uri}`);
    },
    workspaceContext: { resolveRelativePath: (relative, resource) => new URL(relative, resource).href },
    yamlSettings: {},
    clientCapabilities: {},
  });
  const schemas = request.modeline ? [] : [{ uri: url, fileMatch: ["*.yaml"], schema }];
  service.configure({ validate: true, hover: true, completion: true, isKubernetes: false, schemas });
  const offset = request.modeline ? 1 : 0;

  const cases = [];
  for (const item of request.cases) {
    const ajvErrors = item.documents.map((doc) => (validate(doc) ? [] : validate.errors));
    const text = request.modeline ? `# yaml-language-server: $schema=${url}\n${item.text}` : item.text;
    const document = TextDocument.create(`file:///recipes/${item.name}`, "yaml", 1, text);
    const found = await service.doValidation(document, false);
    const diagnostics = found.map((d) => ({
      line: d.range.start.line + 1 - offset,
      severity: d.severity,
      source: d.source || null,
      message: d.message,
    }));
    const hovers = [];
    for (const [line, character] of item.hovers || []) {
      const hover = await service.doHover(document, { line: line - 1 + offset, character });
      hovers.push(hover && hover.contents ? hover.contents.value : null);
    }
    cases.push({ name: item.name, ajv: ajvErrors, diagnostics, hovers });
  }
  process.stdout.write(JSON.stringify({ meta_errors: metaErrors, cases }));
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error) + "\n");
  process.exit(1);
});
