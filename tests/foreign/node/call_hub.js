// A partner's client written from protos/ and docs/errors.md alone, with Node's own gRPC
// implementation (@grpc/grpc-js). Reads its settings as JSON from argv[2], drives the hub on
// loopback, and prints what it saw as one JSON line for the Python test to check.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const settings = JSON.parse(process.argv[2]);
const DEADLINE_MS = 15000;

const definition = protoLoader.loadSync(
  ["coalition/v1/points_service.proto", "coalition/v1/member_service.proto"],
  {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [settings.proto_dir],
  },
);
const v1 = grpc.loadPackageDefinition(definition).coalition.v1;
const credentials = grpc.credentials.createInsecure();
const points = new v1.PointsService(settings.target, credentials);
const members = new v1.MemberService(settings.target, credentials);

// google.rpc.Status and its details, to read the ErrorInfo the hub puts in the trailer.
const googleRpc = new protobuf.Root();
googleRpc.resolvePath = (_origin, target) => path.join(settings.googleapis_dir, target);
googleRpc.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], {
  keepCase: true,
});
googleRpc.resolveAll();
const Status = googleRpc.lookupType("google.rpc.Status");
const ErrorInfo = googleRpc.lookupType("google.rpc.ErrorInfo");
const BadRequest = googleRpc.lookupType("google.rpc.BadRequest");

function call(client, method, request) {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${settings.api_key}`);
  const deadline = new Date(Date.now() + DEADLINE_MS);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

function refusal(error) {
  const [details] = error.metadata.get("grpc-status-details-bin");
  const status = Status.decode(details);
  const refused = { code: grpc.status[error.code], message: status.message, fields: [] };
  for (const detail of status.details) {
    if (detail.type_url.endsWith("/google.rpc.ErrorInfo")) {
      const info = ErrorInfo.decode(detail.value);
      Object.assign(refused, { reason: info.reason, domain: info.domain, metadata: info.metadata });
    } else if (detail.type_url.endsWith("/google.rpc.BadRequest")) {
      for (const violation of BadRequest.decode(detail.value).field_violations) {
        refused.fields.push({ field: violation.field, reason: violation.reason });
      }
    }
  }
  return refused;
}

async function refused(client, method, request) {
  try {
    await call(client, method, request);
  } catch (error) {
    return refusal(error);
  }
  throw new Error(`the hub accepted ${method}`);
}

async function main() {
  const enrolled = await call(members, "EnrollMember", {
    request_id: "node-enrol-1",
    partner_customer_id: settings.customer_id,
    display_name: "Node Client",
  });
  const member = { member_id: enrolled.member.member_id };
  const earn = {
    request_id: "node-earn-1",
    member,
    spend: { amount_minor: "10000", currency: settings.currency },
  };
  const earned = await call(points, "Earn", earn);
  const replayed = await call(points, "Earn", earn);
  const balance = await call(points, "GetBalance", { member });
  const quote = await call(points, "Quote", { burn_points: "5", member });
  const overdraft = await refused(points, "Burn", {
    request_id: "node-burn-1",
    member,
    points: "1000000",
  });
  const badInput = await refused(points, "Burn", { request_id: "node-burn-2", member, points: "-1" });
  const unknown = await refused(points, "GetBalance", { member: { member_id: "mem_none" } });
  console.log(
    JSON.stringify({
      member_id: member.member_id,
      created: enrolled.created,
      earned_points: earned.points,
      earned_replayed: replayed.replayed,
      transaction_id: earned.transaction.transaction_id,
      replayed_transaction_id: replayed.transaction.transaction_id,
      balance_points: balance.balance_points,
      quote_sufficient: quote.sufficient_balance,
      overdraft,
      bad_input: badInput,
      unknown,
    }),
  );
  points.close();
  members.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
