// Validates OpenAPI documents with @apidevtools/swagger-parser: prints
// "valid <file>" per document, or the first problem and exits 1.
const SwaggerParser = require("@apidevtools/swagger-parser");

(async () => {
  let failed = false;
  for (const file of process.argv.slice(2)) {
    try {
      await SwaggerParser.validate(file);
      console.log(`valid ${file}`);
    } catch (e) {
      console.log(`invalid ${file}: ${e.message}`);
      failed = true;
    }
  }
  process.exit(failed ? 1 : 0);
})();
