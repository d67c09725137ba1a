// Bytes exchanged with the real envoyproxy/ratelimit: the request as tooling/rls-wire.ts (a second,
// independent encoder) writes it, and the service's two answers to it, captured from a fresh Redis.
// test/ratelimit-service.test.ts reads this file: it sends REQUEST_HEX and checks that the service
// still answers as RESPONSE_*_HEX say, so these bytes cannot drift from the real protocol.
//
// The request: domain "llm-mesh-test"; descriptors [tenant=wire, limit=tokens] 1000 per HOUR, hits
// 600; and [tenant=wire, city=zürich] 100 per MINUTE, hits 1.

export const REQUEST_HEX = "0a0d6c6c6d2d6d6573682d74657374122d0a0e0a0674656e616e741204776972650a0f0a056c696d69741206746f6b656e73120508e80710031a0308d804122b0a0e0a0674656e616e741204776972650a0f0a046369747912077ac3bc726963681204086410021a020801";

/** The first answer: both OK, 400 and 99 left, 2940 s and 60 s to the windows' ends. */
export const RESPONSE_FIRST_HEX = "080112110801120508e8071003189003220308fc16120e080112040864100218632202083c";

/** The second: 1200 > 1000 tokens is OVER_LIMIT (no limit_remaining field), the other still OK with 98. */
export const RESPONSE_SECOND_HEX = "0802120e0802120508e8071003220308fc16120e080112040864100218622202083c";
