-- phase: expand
-- One row per (transfer, participant): a transfer A -> B of n satoshis is stored twice,
-- as (address=A, counterparty=B, is_inflow=false) and (address=B, counterparty=A, is_inflow=true).
-- The exposure query for one address is then a single index range scan on (address, ts),
-- and the table distributes by address on Citus (every row of an address on one shard).
-- Addresses are ASCII identifiers: COLLATE "C" (byte order) makes comparisons cheap and the
-- order independent of the database locale.
CREATE SCHEMA IF NOT EXISTS exposure;

CREATE TABLE IF NOT EXISTS exposure.flows (
    address      text COLLATE "C" NOT NULL,
    ts           timestamptz NOT NULL,
    transfer_id  bigint      NOT NULL,
    counterparty text COLLATE "C" NOT NULL,
    is_inflow    boolean     NOT NULL,
    amount_sat   bigint      NOT NULL,
    CONSTRAINT flows_amount_positive CHECK (amount_sat > 0),
    CONSTRAINT flows_amount_max CHECK (amount_sat <= 2100000000000000),
    CONSTRAINT flows_not_self CHECK (counterparty <> address),
    -- Not before the genesis block; the API clamps its bounds to years 1..9999 (exact given this).
    CONSTRAINT flows_ts_range CHECK (ts >= '2009-01-03 00:00:00+00' AND ts < '9999-12-31 00:00:00+00'),
    -- The primary key is the covering index the query uses: equality on address, range on ts,
    -- and the aggregated columns in INCLUDE so the scan is index-only. It contains the
    -- distribution column, as Citus requires.
    CONSTRAINT flows_pkey PRIMARY KEY (address, ts, transfer_id)
        INCLUDE (counterparty, is_inflow, amount_sat)
);

COMMENT ON TABLE exposure.flows IS
    'One row per transfer and participant; amounts in satoshis; see docs/app.md';
