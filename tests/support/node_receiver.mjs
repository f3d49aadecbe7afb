// A push target in another language than hareway's: Node's own http and crypto, no
// packages. It checks each request by the Standard Webhooks specification, answers 204
// when a signature matches and 401 when none does, and prints one JSON line per request.
import { createServer } from "node:http";
import { createHmac, timingSafeEqual } from "node:crypto";

const secret = process.argv[2];
const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");

function verified(id, timestamp, signatures, body) {
  const age = Math.abs(Date.now() / 1000 - Number(timestamp));
  if (!id || !timestamp || !signatures || !(age <= 300)) return false;
  const signed = Buffer.concat([Buffer.from(`${id}.${timestamp}.`), body]);
  const expected = createHmac("sha256", key).update(signed).digest();
  return signatures.split(" ").some((entry) => {
    const [version, value] = entry.split(",");
    const given = Buffer.from(value ?? "", "base64");
    return version === "v1" && given.length === expected.length && timingSafeEqual(given, expected);
  });
}

const server = createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const body = Buffer.concat(chunks);
    const id = request.headers["webhook-id"];
    const ok = verified(id, request.headers["webhook-timestamp"], request.headers["webhook-signature"], body);
    console.log(JSON.stringify({ id, ok, body: body.toString("base64") }));
    response.writeHead(ok ? 204 : 401);
    response.end();
  });
});
server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ port: server.address().port })));
