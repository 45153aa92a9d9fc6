-- Reconciliation of one night: one row per invoice key with both sides side by side, then one
-- finding per (category, key, field, source). Parameters:
--   $night, $window_start, $window_end, $as_of (TIMESTAMP, Beijing wall clock),
--   $grace_cutoff (as_of minus the sync grace period), $amount_tol, $tax_tol, $monitored (VARCHAR[]),
--   $shards, $shard (a shard covers the keys with hash(invoice_key) % shards = shard),
--   $comparable_statuses and $risk_statuses (status words of the model).
--
-- Shards are independent units of work (one process each, read-only on the database): each writes
-- its findings and its unmatched keys to files, and the merge brings them together. What depends on
-- several shards (the probable-match search, new/open/resolved) runs after the merge only, so the
-- outcome never depends on the shard count.
--
-- How it stays fast: one hash aggregate over the shard's rows summarises every key (records per side
-- and a hash of the compared fields per side). A key with one record per side and equal hashes can
-- make no finding except a rule a record breaks on its own; it is counted and never looked at again.
-- Everything else (the few keys missing on a side, duplicated, differing or at risk) is worked out
-- on a small table of their records, exactly as the categories say.
--
-- Tonight's snapshot is read from night_invoices, a temp table copied once from the staged_invoices view
-- (versions.night_table): the view joins the night's seen rows to their versions on every query.

-- name: macros
CREATE OR REPLACE TEMP MACRO rc_rows(n, shards, shard) AS TABLE
    SELECT * FROM night_invoices
    WHERE night = n AND invoice_key IS NOT NULL AND (shards = 1 OR hash(invoice_key) % shards = shard);

-- name: keys
-- Keys worth a closer look: not exactly one record on each side, fields that differ (by a 64-bit hash
-- of the compared fields: equal values hash equal, NULLs included; two different sets of values
-- hash equal with a probability of about 5e-20 per pair), or a registry risk status.
CREATE OR REPLACE TEMP TABLE rc_keys AS
SELECT invoice_key, ni, nr
FROM (
    SELECT invoice_key,
           count(*) FILTER (WHERE source_kind = 'issuer') AS ni,
           count(*) FILTER (WHERE source_kind = 'registry') AS nr,
           min(h) FILTER (WHERE source_kind = 'issuer') AS hi,
           min(h) FILTER (WHERE source_kind = 'registry') AS hr,
           bool_or(risk) AS risk
    FROM (
        SELECT invoice_key, source_kind,
               hash(amount, tax_amount, total_amount, issue_date, seller_tax_id, buyer_tax_id, buyer_name,
                    invoice_type, status) AS h,
               source_kind = 'registry'
                   AND (list_contains($risk_statuses, status) OR coalesce(risk_level, 'none') <> 'none') AS risk
        FROM rc_rows($night, $shards, $shard)
    )
    GROUP BY invoice_key
)
WHERE ni <> 1 OR nr <> 1 OR hi <> hr OR risk;

-- name: key_rows
CREATE OR REPLACE TEMP TABLE rc_krows AS
SELECT s.*
FROM rc_rows($night, $shards, $shard) s
SEMI JOIN rc_keys k ON k.invoice_key = s.invoice_key;

-- name: duplicates
-- Keys seen more than once in one source's snapshot: found and collapsed before the join, so a
-- key k times on one side and m times on the other never makes k x m rows.
-- (the ordered string_agg runs on the duplicated groups only: it is slow per group)
CREATE OR REPLACE TEMP TABLE rc_dups AS
WITH d AS (
    SELECT source_kind, source_system, invoice_key, count(*) AS n
    FROM rc_krows
    GROUP BY ALL
    HAVING count(*) > 1
)
SELECT d.source_kind, d.source_system, d.invoice_key, d.n,
       string_agg(r.file || ':' || r.line, ', ' ORDER BY r.file, r.line) AS places
FROM d
JOIN rc_krows r USING (source_kind, source_system, invoice_key)
GROUP BY d.source_kind, d.source_system, d.invoice_key, d.n;

-- name: one_per_source
CREATE OR REPLACE TEMP TABLE rc_one AS
SELECT *
FROM rc_krows
QUALIFY row_number() OVER (PARTITION BY source_system, invoice_key ORDER BY file, line) = 1;

-- name: monitored
CREATE OR REPLACE TEMP TABLE rc_monitored AS
SELECT DISTINCT seller_tax_id
FROM (
    SELECT unnest($monitored::VARCHAR[]) AS seller_tax_id
    UNION ALL
    SELECT seller_tax_id FROM night_invoices
    WHERE night = $night AND source_kind = 'issuer' AND len($monitored::VARCHAR[]) = 0
)
WHERE seller_tax_id IS NOT NULL;

-- name: issuer_side
-- One issuer record per key: the alphabetically first system holding it.
CREATE OR REPLACE TEMP TABLE rc_issuer AS
SELECT *, count(*) OVER (PARTITION BY invoice_key) AS n_systems
FROM rc_one
WHERE source_kind = 'issuer'
QUALIFY row_number() OVER (PARTITION BY invoice_key ORDER BY source_system) = 1;

-- name: across_issuers
CREATE OR REPLACE TEMP TABLE rc_across AS
SELECT invoice_key, string_agg(source_system, ',' ORDER BY source_system) AS systems
FROM rc_one
WHERE source_kind = 'issuer' AND invoice_key IN (SELECT invoice_key FROM rc_issuer WHERE n_systems > 1)
GROUP BY invoice_key;

-- name: pairs
-- Both sides side by side, one row per key of rc_keys (every other key is matched and equal).
CREATE OR REPLACE TEMP TABLE rc_pairs AS
SELECT
    coalesce(i.invoice_key, r.invoice_key)  AS invoice_key,
    i.invoice_key IS NOT NULL               AS in_issuer,
    r.invoice_key IS NOT NULL               AS in_registry,
    i.source_system AS i_system, i.invoice_code AS i_code, i.invoice_number AS i_number,
    i.invoice_type AS i_type, i.issue_time AS i_time, i.issue_date AS i_date,
    i.seller_tax_id AS i_seller, i.buyer_tax_id AS i_buyer_id, i.buyer_name AS i_buyer_name,
    i.amount AS i_amount, i.tax_amount AS i_tax, i.total_amount AS i_total, i.status AS i_status,
    r.invoice_code AS r_code, r.invoice_number AS r_number,
    r.invoice_type AS r_type, r.issue_time AS r_time, r.issue_date AS r_date,
    r.seller_tax_id AS r_seller, r.buyer_tax_id AS r_buyer_id, r.buyer_name AS r_buyer_name,
    r.amount AS r_amount, r.tax_amount AS r_tax, r.total_amount AS r_total, r.status AS r_status,
    r.risk_level AS r_risk,
    (r.seller_tax_id IN (SELECT seller_tax_id FROM rc_monitored)) AS r_monitored
FROM rc_issuer i
FULL OUTER JOIN (SELECT * FROM rc_one WHERE source_kind = 'registry') r USING (invoice_key);

-- name: create_findings
-- A shard's findings: the columns of the findings table but the night and what the merge adds. The
-- sections below insert into it by position, in that order (category, invoice_key, invoice_code,
-- invoice_number, field, source_system, issuer_value, registry_value, seller_tax_id, issue_date,
-- detail, suggested_match).
CREATE OR REPLACE TEMP TABLE rc_findings AS
SELECT category, invoice_key, invoice_code, invoice_number, field, source_system, issuer_value, registry_value,
       seller_tax_id, issue_date, detail, suggested_match
FROM findings WHERE false;

-- name: missing_in_registry
-- Issued in a system, absent from the registry: MISSING once the sync grace period has passed. A failed
-- issuance (开票失败, 签章失败) was never issued: it is NOT_ISSUED instead (below). Why an invoice is
-- missing (its cause) is added after the merge (missing_causes).
INSERT INTO rc_findings
SELECT
    -- MISSING once issued *longer* ago than the grace period: exactly at the cutoff (a date-only time on the
    -- boundary midnight) is still pending.
    CASE WHEN i_time >= $grace_cutoff THEN 'PENDING_SYNC' ELSE 'MISSING_IN_REGISTRY' END,
    invoice_key, i_code, i_number, '', i_system, NULL, NULL, i_seller, i_date,
    'issued ' || strftime(i_time, '%Y-%m-%d %H:%M') || ', not in the registry snapshot of '
        || strftime($as_of::TIMESTAMP, '%Y-%m-%d %H:%M') || ' (' || round(epoch($as_of::TIMESTAMP - i_time) / 3600, 1)
        || ' h after issue; grace ' || round(epoch($as_of::TIMESTAMP - $grace_cutoff::TIMESTAMP) / 3600, 1) || ' h)',
    NULL
FROM rc_pairs
WHERE in_issuer AND NOT in_registry AND i_date BETWEEN $window_start AND $window_end
  AND i_status IS DISTINCT FROM 'failed';

-- name: not_issued
-- The issuer records a failed issuance and the registry does not hold the key: listed, not missing. (Where
-- the registry holds it, the statuses disagree: a STATUS_MISMATCH.)
INSERT INTO rc_findings
SELECT 'NOT_ISSUED', invoice_key, i_code, i_number, '', i_system, i_status, NULL, i_seller, i_date,
       'the issuing system records a failed issuance (' || i_system || ', ' || strftime(i_time, '%Y-%m-%d %H:%M')
           || '): never issued, not expected in the registry',
       NULL
FROM rc_pairs
WHERE in_issuer AND NOT in_registry AND i_date BETWEEN $window_start AND $window_end AND i_status = 'failed';

-- name: missing_in_issuer
INSERT INTO rc_findings
SELECT 'MISSING_IN_ISSUER', invoice_key, r_code, r_number, '', 'registry', NULL, NULL, r_seller, r_date,
       'in the registry (issued ' || strftime(r_time, '%Y-%m-%d %H:%M') || ', status ' || r_status
           || '), in no issuing system''s snapshot',
       NULL
FROM rc_pairs
WHERE in_registry AND NOT in_issuer AND r_monitored AND r_date BETWEEN $window_start AND $window_end;

-- name: duplicate_in_source
INSERT INTO rc_findings
SELECT 'DUPLICATE_IN_SOURCE', d.invoice_key, o.invoice_code, o.invoice_number, '', d.source_system, NULL, NULL,
       o.seller_tax_id, o.issue_date,
       d.n || ' records with this key in ' || d.source_system || ': ' || d.places, NULL
FROM rc_dups d
JOIN rc_one o USING (source_system, invoice_key)
WHERE d.source_kind = 'issuer'
   OR o.seller_tax_id IN (SELECT seller_tax_id FROM rc_monitored)
   OR d.invoice_key IN (SELECT invoice_key FROM rc_issuer);

-- name: duplicate_across_issuers
INSERT INTO rc_findings
SELECT 'DUPLICATE_ACROSS_ISSUERS', a.invoice_key, i.invoice_code, i.invoice_number, '', a.systems, NULL, NULL,
       i.seller_tax_id, i.issue_date, 'issued by ' || n_systems || ' systems: ' || a.systems, NULL
FROM rc_across a
JOIN rc_issuer i USING (invoice_key);

-- name: field_mismatch
-- Both sides have the key; one row per field that differs after normalisation.
INSERT INTO rc_findings
WITH matched AS (SELECT * FROM rc_pairs WHERE in_issuer AND in_registry),
diffs AS (
    SELECT *, 'amount' AS field, i_amount::VARCHAR AS iv, r_amount::VARCHAR AS rv, (i_amount - r_amount)::VARCHAR AS delta
    FROM matched WHERE abs(i_amount - r_amount) > $amount_tol
    UNION ALL
    SELECT *, 'tax_amount', i_tax::VARCHAR, r_tax::VARCHAR, (i_tax - r_tax)::VARCHAR
    FROM matched WHERE abs(i_tax - r_tax) > $amount_tol
    UNION ALL
    SELECT *, 'total_amount', i_total::VARCHAR, r_total::VARCHAR, (i_total - r_total)::VARCHAR
    FROM matched WHERE abs(i_total - r_total) > $amount_tol
    UNION ALL
    SELECT *, 'issue_date', i_date::VARCHAR, r_date::VARCHAR, (i_date - r_date)::VARCHAR || ' d'
    FROM matched WHERE i_date <> r_date
    UNION ALL
    SELECT *, 'seller_tax_id', i_seller, r_seller, NULL FROM matched WHERE i_seller <> r_seller
    UNION ALL
    SELECT *, 'buyer_tax_id', i_buyer_id, r_buyer_id, NULL FROM matched WHERE i_buyer_id <> r_buyer_id
    UNION ALL
    SELECT *, 'buyer_name', i_buyer_name, r_buyer_name, NULL FROM matched WHERE i_buyer_name <> r_buyer_name
    UNION ALL
    -- (only between recognised kinds: a code or a blue/red flag in a type column is not comparable)
    SELECT *, 'invoice_type', i_type, r_type, NULL FROM matched
    WHERE i_type <> r_type AND list_contains($invoice_types, i_type) AND list_contains($invoice_types, r_type)
)
SELECT 'FIELD_MISMATCH', invoice_key, i_code, i_number, field, i_system, iv, rv, i_seller, i_date,
       field || ' differs: issuer ' || coalesce(iv, '∅') || ', registry ' || coalesce(rv, '∅')
           || coalesce(' (difference ' || delta || ')', ''),
       NULL
FROM diffs;

-- name: status_mismatch
INSERT INTO rc_findings
SELECT 'STATUS_MISMATCH', invoice_key, i_code, i_number, 'status', i_system, i_status, r_status, i_seller, i_date,
       'issuer says ' || i_status || ', registry says ' || r_status, NULL
FROM rc_pairs
WHERE in_issuer AND in_registry
  AND list_contains($comparable_statuses, i_status)
  AND list_contains($comparable_statuses, r_status)
  AND i_status <> r_status;

-- name: registry_risk
-- The registry's 发票状态 says out of control or abnormal (field status), or its 发票风险等级 is other
-- than none (field risk_level): one finding for each.
INSERT INTO rc_findings
WITH at_risk AS (
    SELECT * FROM rc_pairs
    WHERE in_registry AND (in_issuer OR r_monitored) AND coalesce(i_date, r_date) BETWEEN $window_start AND $window_end
)
SELECT 'REGISTRY_RISK', invoice_key, coalesce(i_code, r_code), coalesce(i_number, r_number), 'status', 'registry',
       i_status, r_status, coalesce(i_seller, r_seller), coalesce(i_date, r_date),
       'the registry marks this invoice ' || r_status
           || CASE WHEN in_issuer THEN ' (issuer: ' || i_status || ')' ELSE '' END,
       NULL
FROM at_risk
WHERE list_contains($risk_statuses, r_status)
UNION ALL
SELECT 'REGISTRY_RISK', invoice_key, coalesce(i_code, r_code), coalesce(i_number, r_number), 'risk_level',
       'registry', NULL, r_risk, coalesce(i_seller, r_seller), coalesce(i_date, r_date),
       'the registry gives this invoice the risk level ' || r_risk || ' (发票风险等级)', NULL
FROM at_risk
WHERE coalesce(r_risk, 'none') <> 'none';

-- name: invalid_records
-- Rules a record breaks on its own, on every issuer record and every in-scope registry record (one
-- record per source and key). One pass over the shard's rows finds the few violating records; a key
-- outside rc_keys has exactly one record per side, so that record is its source's record and the key
-- is on the issuer side. Where an invoice has lines, the rate rule is applied per line (line_rate_gap,
-- the largest of its lines) and the lines must add up to the invoice.
INSERT INTO rc_findings
WITH candidates AS MATERIALIZED (
    SELECT s.source_kind, s.source_system, s.invoice_key, s.invoice_code, s.invoice_number, s.seller_tax_id,
           s.buyer_tax_id, s.issue_date, s.amount, s.tax_amount, s.tax_rate, s.total_amount, s.lines,
           s.lines_amount, s.lines_tax, s.line_rate_gap, s.line_rate_line, s.line_problem, true AS on_issuer_side
    FROM rc_rows($night, $shards, $shard) s
    ANTI JOIN rc_keys k ON k.invoice_key = s.invoice_key
    -- (the same rules as below; measured cheapest for the pass over every record: an explicit [0-9]
    -- class, the code checked only on 8-character numbers, amounts in DECIMAL)
    WHERE NOT regexp_full_match(s.invoice_number, '[0-9]{8}|[0-9]{20}')
       OR (length(s.invoice_number) = 8 AND NOT regexp_full_match(s.invoice_code, '[0-9]{10}|[0-9]{12}'))
       OR s.seller_tax_id IN (SELECT tax_id FROM rc_bad_tax_ids)
       OR s.buyer_tax_id IN (SELECT tax_id FROM rc_bad_tax_ids)
       OR abs(s.total_amount - (s.amount + s.tax_amount)) > $amount_tol
       OR (s.lines IS NULL AND abs(s.amount * s.tax_rate - s.tax_amount) > $tax_tol)
       OR s.line_rate_gap > $tax_tol
       OR s.line_problem IS NOT NULL
       OR abs(s.lines_amount - s.amount) > $amount_tol
       OR abs(s.lines_tax - s.tax_amount) > $amount_tol
    UNION ALL
    SELECT o.source_kind, o.source_system, o.invoice_key, o.invoice_code, o.invoice_number, o.seller_tax_id,
           o.buyer_tax_id, o.issue_date, o.amount, o.tax_amount, o.tax_rate, o.total_amount, o.lines,
           o.lines_amount, o.lines_tax, o.line_rate_gap, o.line_rate_line, o.line_problem,
           o.invoice_key IN (SELECT invoice_key FROM rc_issuer) AS on_issuer_side
    FROM rc_one o
),
scoped AS MATERIALIZED (
    SELECT * FROM candidates
    WHERE source_kind = 'issuer' OR seller_tax_id IN (SELECT seller_tax_id FROM rc_monitored) OR on_issuer_side
),
violations AS (
    SELECT *, 'invoice_number' AS field, invoice_number AS value,
           'invoice number ' || invoice_number || ' is neither 8 digits (legacy) nor 20 digits (数电票)' AS why
    FROM scoped WHERE NOT regexp_full_match(invoice_number, '\d{8}|\d{20}')
    UNION ALL
    SELECT *, 'invoice_code', invoice_code,
           'legacy invoice code ' || CASE WHEN invoice_code = '' THEN '(empty)' ELSE invoice_code END
               || ' is not 10 or 12 digits'
    FROM scoped WHERE regexp_full_match(invoice_number, '\d{8}') AND NOT regexp_full_match(invoice_code, '\d{10}|\d{12}')
    UNION ALL
    SELECT *, 'seller_tax_id', seller_tax_id, 'seller tax id fails the GB 32100 check character'
    FROM scoped WHERE seller_tax_id IN (SELECT tax_id FROM rc_bad_tax_ids)
    UNION ALL
    SELECT *, 'buyer_tax_id', buyer_tax_id, 'buyer tax id fails the GB 32100 check character'
    FROM scoped WHERE buyer_tax_id IN (SELECT tax_id FROM rc_bad_tax_ids)
    UNION ALL
    SELECT *, 'total_amount', total_amount::VARCHAR,
           'total ' || total_amount || ' <> amount ' || amount || ' + tax ' || tax_amount
               || ' (difference ' || (total_amount - amount - tax_amount) || ')'
    FROM scoped WHERE abs(total_amount - (amount + tax_amount)) > $amount_tol
    UNION ALL
    SELECT *, 'tax_amount', tax_amount::VARCHAR,
           'tax ' || tax_amount || ' <> amount ' || amount || ' x rate ' || round(tax_rate, 4)
               || ' = ' || round(amount * tax_rate, 2) || ' (off by more than ' || $tax_tol || ')'
    FROM scoped WHERE lines IS NULL AND abs(amount * tax_rate - tax_amount) > $tax_tol
    UNION ALL
    SELECT *, 'tax_amount', tax_amount::VARCHAR,
           'the tax of line ' || coalesce(line_rate_line::VARCHAR, '?') || ' differs from its amount x rate by '
               || round(line_rate_gap, 2) || ' (more than ' || $tax_tol || ')'
    FROM scoped WHERE line_rate_gap > $tax_tol
    UNION ALL
    SELECT *, 'lines', lines_amount::VARCHAR,
           concat_ws('; ',
               CASE WHEN line_problem IS NOT NULL THEN 'the lines of this invoice disagree on ' || line_problem END,
               CASE WHEN abs(lines_amount - amount) > $amount_tol OR abs(lines_tax - tax_amount) > $amount_tol
                    THEN 'its ' || lines || ' line(s) add up to amount ' || lines_amount || ', tax ' || lines_tax
                         || '; the invoice says amount ' || amount || ', tax ' || tax_amount END)
    FROM scoped
    WHERE line_problem IS NOT NULL OR abs(lines_amount - amount) > $amount_tol OR abs(lines_tax - tax_amount) > $amount_tol
)
SELECT 'INVALID_RECORD', invoice_key, invoice_code, invoice_number, field, source_system,
       CASE WHEN source_kind = 'issuer' THEN value END, CASE WHEN source_kind = 'registry' THEN value END,
       seller_tax_id, issue_date, why, NULL
FROM violations;

-- name: orphan_red_invoices
-- A red invoice whose blue original is found nowhere (tonight or in earlier staged nights), or whose
-- red totals exceed the blue. One finding per red key, named after the red invoice. The red totals
-- per blue are summed over the whole night (reds of one blue may fall into different shards).
INSERT INTO rc_findings
WITH reds AS (
    SELECT * FROM night_invoices
    WHERE night = $night AND is_red AND invoice_key IS NOT NULL
      AND (source_kind = 'issuer' OR seller_tax_id IN (SELECT seller_tax_id FROM rc_monitored))
    QUALIFY row_number() OVER (PARTITION BY invoice_key ORDER BY source_kind = 'registry', source_system, file, line) = 1
),
blues AS (
    SELECT invoice_key, abs(total_amount) AS total
    FROM (
        SELECT invoice_key, total_amount, 0 AS age, source_kind = 'registry' AS reg, source_system
        FROM night_invoices
        WHERE night = $night AND invoice_key IN (SELECT original_invoice_key FROM reds) AND NOT is_red
        UNION ALL
        SELECT invoice_key, total_amount, $night - night, source_kind = 'registry', source_system
        FROM staged_invoices
        WHERE night < $night AND invoice_key IN (SELECT original_invoice_key FROM reds) AND NOT is_red
        UNION ALL
        -- nights whose staged rows retention removed (storage.sweep kept their blue invoices)
        SELECT invoice_key, total_amount, $night - night, source_kind = 'registry', source_system
        FROM retired_blues
        WHERE night < $night AND invoice_key IN (SELECT original_invoice_key FROM reds)
    )
    QUALIFY row_number() OVER (PARTITION BY invoice_key ORDER BY age, reg DESC, source_system) = 1
),
sums AS (
    SELECT original_invoice_key, sum(abs(total_amount)) AS red_total, count(*) AS n_reds
    FROM reds WHERE original_invoice_key IS NOT NULL GROUP BY 1
)
SELECT 'ORPHAN_RED_INVOICE', r.invoice_key, r.invoice_code, r.invoice_number, '', r.source_system,
       CASE WHEN r.source_kind = 'issuer' THEN r.original_invoice_key END,
       CASE WHEN r.source_kind = 'registry' THEN r.original_invoice_key END,
       r.seller_tax_id, r.issue_date,
       CASE
           WHEN r.original_invoice_key IS NULL THEN 'red invoice names no blue original (no reference in 备注)'
           WHEN b.invoice_key IS NULL THEN 'blue original ' || r.original_invoice_key || ' is found in no snapshot'
           ELSE 'red totals ' || s.red_total || ' (' || s.n_reds || ' red invoice(s)) exceed the blue original '
                || r.original_invoice_key || ' total ' || b.total
       END,
       NULL
FROM reds r
LEFT JOIN blues b ON b.invoice_key = r.original_invoice_key
LEFT JOIN sums s ON s.original_invoice_key = r.original_invoice_key
WHERE ($shards = 1 OR hash(r.invoice_key) % $shards = $shard)
  AND (r.original_invoice_key IS NULL OR b.invoice_key IS NULL OR s.red_total > b.total + $amount_tol);

-- name: shard_stats
-- Keys per side (distinct), keys on the issuer side only, registry records of sellers out of scope.
SELECT
    (SELECT count(*) FROM rc_rows($night, $shards, $shard) WHERE source_kind = 'issuer')
        - (SELECT coalesce(sum(ni - 1), 0) FROM rc_keys WHERE ni > 1) AS issuer_keys,
    (SELECT count(*) FROM rc_rows($night, $shards, $shard) WHERE source_kind = 'registry')
        - (SELECT coalesce(sum(nr - 1), 0) FROM rc_keys WHERE nr > 1) AS registry_keys,
    (SELECT count(*) FROM rc_pairs WHERE in_issuer AND NOT in_registry) AS issuer_only,
    (SELECT count(*) FROM rc_pairs WHERE in_registry AND NOT in_issuer AND NOT r_monitored) AS other_sellers;

-- name: unmatched
-- Keys on one side only: the probable-match search meets them again after the merge (a typo moves a
-- key into another shard).
SELECT invoice_key, in_issuer, in_registry, i_seller, i_amount, i_date, r_seller, r_amount, r_date
FROM rc_pairs
WHERE in_issuer <> in_registry;

-- name: probable_match
-- A missing invoice whose number differs by one or two characters from an unmatched registry record
-- of the same seller, amount and date (a typo or a transposition): name each as the other's match.
CREATE OR REPLACE TEMP TABLE rc_matches AS
WITH lost AS (
    SELECT invoice_key, i_seller AS seller, i_amount AS amount, i_date AS d FROM rc_unmatched
    WHERE in_issuer AND NOT in_registry
),
extra AS (
    SELECT invoice_key, r_seller AS seller, r_amount AS amount, r_date AS d FROM rc_unmatched
    WHERE in_registry AND NOT in_issuer
)
SELECT l.invoice_key AS issuer_key, e.invoice_key AS registry_key,
       damerau_levenshtein(l.invoice_key, e.invoice_key) AS distance
FROM lost l JOIN extra e USING (seller, amount, d)
WHERE damerau_levenshtein(l.invoice_key, e.invoice_key) <= 2;

-- name: probable_match_apply
UPDATE rc_all f
SET suggested_match = m.other,
    detail = f.detail || '; probable match: ' || m.other || ' (same seller, amount and date; '
             || m.distance || ' character(s) apart)'
FROM (
    SELECT issuer_key AS k, arg_min(registry_key, (distance, registry_key)) AS other, min(distance) AS distance
    FROM rc_matches GROUP BY 1
    UNION ALL
    SELECT registry_key, arg_min(issuer_key, (distance, issuer_key)), min(distance)
    FROM rc_matches GROUP BY 1
) m
WHERE f.invoice_key = m.k AND f.category IN ('MISSING_IN_REGISTRY', 'PENDING_SYNC', 'MISSING_IN_ISSUER');

-- name: missing_causes
-- Why each issued invoice is missing from the registry (MISSING_IN_REGISTRY, PENDING_SYNC), from its
-- issuer record's issuance and upload states: stuck issuing, then the upload state; no upload state (or a
-- word no map knows) is unknown. The record is the source's first for the key, as in the findings. The
-- system's own document number (单据编号), where it has one, is added to the detail as evidence.
UPDATE rc_all f
SET detail = f.detail || coalesce('; source document ' || c.source_document, ''),
    cause = CASE
        WHEN f.category = 'NOT_ISSUED' THEN NULL
        WHEN c.status = 'issuing' THEN CASE WHEN f.category = 'MISSING_IN_REGISTRY' THEN 'stuck_issuing' ELSE 'issuing' END
        WHEN c.upload_status = 'uploaded' THEN 'uploaded_but_absent'
        WHEN c.upload_status = 'failed' THEN 'upload_failed'
        WHEN c.upload_status IN ('not_uploaded', 'uploading', 'signature_failed') THEN c.upload_status
        ELSE 'unknown' END
FROM (
    SELECT source_system, invoice_key, first(status ORDER BY file, line) AS status,
           first(upload_status ORDER BY file, line) AS upload_status,
           first(source_document ORDER BY file, line) AS source_document
    FROM night_invoices
    WHERE night = $night AND source_kind = 'issuer'
      AND invoice_key IN (SELECT invoice_key FROM rc_all WHERE category IN ('MISSING_IN_REGISTRY', 'PENDING_SYNC', 'NOT_ISSUED'))
    GROUP BY source_system, invoice_key
) c
WHERE f.category IN ('MISSING_IN_REGISTRY', 'PENDING_SYNC', 'NOT_ISSUED')
  AND f.source_system = c.source_system AND f.invoice_key = c.invoice_key;

-- name: money
-- The invoice's 价税合计 on each side (the source's own first record for the key; a registry finding
-- takes the first issuing system's), and the amount at risk: the larger absolute value of the two.
CREATE OR REPLACE TEMP TABLE rc_money AS
SELECT source_kind, source_system, invoice_key,
       first(coalesce(total_amount, amount + tax_amount) ORDER BY file, line) AS total,
       first(nullif(original_invoice_key, '') ORDER BY file, line) FILTER (WHERE is_red) AS original_key
FROM night_invoices
WHERE night = $night AND invoice_key IN (SELECT invoice_key FROM rc_all WHERE invoice_key IS NOT NULL)
GROUP BY ALL;

-- name: money_apply
UPDATE rc_all f
SET issuer_total = t.issuer_total, registry_total = t.registry_total
FROM (
    SELECT k.invoice_key, k.source_system, coalesce(own.total, anyi.total) AS issuer_total, reg.total AS registry_total
    FROM (SELECT DISTINCT invoice_key, source_system FROM rc_all WHERE invoice_key IS NOT NULL) k
    LEFT JOIN rc_money own
           ON own.source_kind = 'issuer' AND own.invoice_key = k.invoice_key AND own.source_system = k.source_system
    LEFT JOIN (SELECT invoice_key, first(total ORDER BY source_system) AS total FROM rc_money
               WHERE source_kind = 'issuer' GROUP BY 1) anyi ON anyi.invoice_key = k.invoice_key
    LEFT JOIN (SELECT invoice_key, first(total ORDER BY source_system) AS total FROM rc_money
               WHERE source_kind = 'registry' GROUP BY 1) reg ON reg.invoice_key = k.invoice_key
) t
WHERE f.invoice_key = t.invoice_key AND f.source_system IS NOT DISTINCT FROM t.source_system;

-- name: money_at_risk
UPDATE rc_all SET amount_at_risk = CASE
    WHEN issuer_total IS NULL THEN abs(registry_total)
    WHEN registry_total IS NULL THEN abs(issuer_total)
    ELSE greatest(abs(issuer_total), abs(registry_total)) END;

-- name: cases
-- Findings that are one problem share a case: an invoice's own findings; a red invoice with its blue
-- (the case of the blue's key); a probable match's pair (a typo: the smaller of the two keys' cases).
CREATE OR REPLACE TEMP TABLE rc_cases AS
WITH keys AS (
    SELECT invoice_key AS k, min(suggested_match) AS match FROM rc_all WHERE invoice_key IS NOT NULL GROUP BY 1
),
red AS (SELECT invoice_key AS k, min(original_key) AS blue FROM rc_money WHERE original_key IS NOT NULL GROUP BY 1),
base AS (SELECT keys.k, keys.match, coalesce(red.blue, keys.k) AS b FROM keys LEFT JOIN red USING (k))
SELECT b1.k, least(b1.b, coalesce(b2.b, b1.match, b1.b)) AS root
FROM base b1 LEFT JOIN base b2 ON b2.k = b1.match;

-- name: cases_apply
UPDATE rc_all f SET case_id = 'C-' || c.root FROM rc_cases c WHERE f.invoice_key = c.k;
