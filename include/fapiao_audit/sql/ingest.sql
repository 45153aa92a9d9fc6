-- Normalisation of one delivered file into staged_invoices / staged_lines (as versions) / rejected_rows.
-- Input: the temp view ing_mapped(__line, <canonical columns as VARCHAR or NULL>, first_cell).
-- Parameters: $night, $kind, $system, $file.

-- name: macros
-- Full-width ASCII (U+FF01..U+FF5E), the ideographic space and the no-break space become their
-- half-width forms: the part of Unicode NFKC that matters for ids, amounts, dates and names.
-- translate() costs ~4 us a value (it builds its character map each time), so it runs only on values
-- holding such a character, and the commonest ones in Chinese text (：（），) are replaced first, which
-- leaves most values (remarks such as 合同编号：HT…) with nothing for translate() to do.
CREATE OR REPLACE TEMP MACRO fa_hw_all(s) AS
    CASE WHEN regexp_matches(s, '[\x{FF01}-\x{FF5E}\x{3000}\x{00A0}\x{FFE5}\x{2014}]')
    THEN translate(s,
             '！＂＃＄％＆＇（）＊＋，－．／０１２３４５６７８９：；＜＝＞？＠ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ［＼］＾＿｀ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ｛｜｝～　 ￥—',
             '!"#$%&''()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghijklmnopqrstuvwxyz{|}~  ¥-')
    ELSE s END;

CREATE OR REPLACE TEMP MACRO fa_hw(s) AS
    CASE WHEN regexp_matches(s, '[\x{FF01}-\x{FF5E}\x{3000}\x{00A0}\x{FFE5}\x{2014}]')
    THEN fa_hw_all(replace(replace(replace(replace(s, '：', ':'), '（', '('), '）', ')'), '，', ','))
    ELSE s END;

-- name: macro_code
-- A source's value codes ([sources.<system>.values.<column>], the temp table ing_value_map): a cell equal
-- to a code becomes its value; any other cell stays as it is (codes are never guessed).
CREATE OR REPLACE TEMP MACRO fa_code(column_name, s) AS
    coalesce((SELECT m.v FROM ing_value_map m WHERE m.col = column_name AND m.k = s), s);

-- name: macro_dashes
-- The export's placeholder for "no value": a cell of dashes only (--, -, —, ——, －－). Asked only on the
-- rare paths of the macros below: most values never start with a dash.
CREATE OR REPLACE TEMP MACRO fa_dashes(s) AS ltrim(s, '-—–－―') = '';
CREATE OR REPLACE TEMP MACRO fa_undash(t) AS CASE WHEN fa_dashes(t) THEN '' ELSE t END;

-- name: macro_ascii_plain
-- The cheapest question first, for identifiers and amounts: ASCII (as many bytes as characters) with
-- no white space. Such a value holds nothing fa_id / fa_amount_text rewrite but quotes and '='
-- (identifiers) or ',' (amounts), and the answer costs a few nanoseconds against ~100 for a regular
-- expression. (Measured slower than the regular expression alone on short text, so not in fa_text.)
CREATE OR REPLACE TEMP MACRO fa_ascii_plain(s) AS
    strlen(s) = length(s) AND NOT (contains(s, ' ') OR contains(s, chr(9)) OR contains(s, chr(10))
                                   OR contains(s, chr(11)) OR contains(s, chr(12)) OR contains(s, chr(13)));

-- name: macro_text
-- Each macro asks one question (regexp_matches) and rewrites only values that need it: most
-- values are already clean, and regexp_replace / translate cost far more per row. The question
-- includes the full-width characters, so half-width translation needs no pass of its own.
-- A value of dashes only ('--', '—') is empty: the export's placeholder (the question routes values
-- starting with a dash to the rewrite, which empties them when nothing but dashes is left).
CREATE OR REPLACE TEMP MACRO fa_text(s) AS
    NULLIF(CASE WHEN regexp_matches(s, '\s\s|^\s|\s$|^-|[\t\n\r\f\v\x{200B}\x{FEFF}\x{FF01}-\x{FF5E}\x{3000}\x{00A0}\x{FFE5}\x{2013}-\x{2015}]')
                THEN fa_undash(trim(regexp_replace(fa_hw(s), '[\s\x{200B}\x{FEFF}]+', ' ', 'g'))) ELSE s END, '');

-- name: macro_id
-- Identifiers: no white space, upper case, Excel text markers (="0123" or '0123) removed.
CREATE OR REPLACE TEMP MACRO fa_id(s) AS
    upper(CASE WHEN fa_ascii_plain(s) AND NOT (contains(s, '''') OR contains(s, '"') OR contains(s, '=')
                                               OR starts_with(s, '-')) THEN s
               WHEN fa_dashes(s) THEN ''
               WHEN regexp_matches(s, '[\s\x{200B}\x{FEFF}''"=\x{FF01}-\x{FF5E}\x{3000}\x{00A0}\x{FFE5}\x{2014}]')
               THEN regexp_replace(fa_hw(s), '[\s\x{200B}\x{FEFF}''"=]', '', 'g') ELSE s END);

-- name: macro_amount_text
-- A comma is a thousands separator only where it can be one (1,234.50); 12,5 or 1.234,56 keep their comma
-- and fail the cast (a rejected row), never 125 or 1.23.
CREATE OR REPLACE TEMP MACRO fa_thousands(t) AS
    CASE WHEN contains(t, ',') AND regexp_full_match(t, '[+-]?\d{1,3}(,\d{3})+(\.\d*)?') THEN replace(t, ',', '')
         ELSE t END;
CREATE OR REPLACE TEMP MACRO fa_amount_text(s) AS
    NULLIF(CASE WHEN fa_ascii_plain(s) AND NOT (starts_with(s, '-') AND fa_dashes(s))
                     THEN (CASE WHEN contains(s, ',') THEN fa_thousands(s) ELSE s END)
                WHEN fa_dashes(s) THEN NULL
                WHEN regexp_matches(s, '[\s¥\x{200B}\x{FEFF}\x{FF01}-\x{FF5E}\x{3000}\x{00A0}\x{FFE5}\x{2014}]')
                THEN fa_thousands(regexp_replace(fa_hw(s), '[\s¥\x{200B}\x{FEFF}]', '', 'g')) ELSE fa_thousands(s) END, '');

-- name: macro_amount
CREATE OR REPLACE TEMP MACRO fa_amount(s) AS
    -- A direct cast to DECIMAL(18, 2) rounds half away from zero to the fen (1234.4999999999998 ->
    -- 1234.50) and reads scientific notation; going through DECIMAL(38, 10) is ~400x slower.
    TRY_CAST(fa_amount_text(s) AS DECIMAL(18, 2));

-- name: macro_rate_t
CREATE OR REPLACE TEMP MACRO fa_rate_t(t) AS CASE
    WHEN t IS NULL OR t = '' OR t IN ('*', '***', '-') THEN NULL
    WHEN t IN ('免税', '不征税', '免征', '零税率') THEN 0::DECIMAL(9, 4)
    -- A negative number is a system's code (-1 不征税, -2 免税 in some), not a rate: mapped per source
    -- ([sources.<system>.values.tax_rate]) or no rate at all, never a rate of -1 %.
    WHEN starts_with(t, '-') THEN NULL
    WHEN suffix(t, '%') THEN TRY_CAST(round(TRY_CAST(rtrim(t, '%') AS DECIMAL(18, 8)) / 100, 4) AS DECIMAL(9, 4))
    WHEN TRY_CAST(t AS DECIMAL(18, 8)) >= 1 THEN TRY_CAST(round(TRY_CAST(t AS DECIMAL(18, 8)) / 100, 4) AS DECIMAL(9, 4))
    ELSE TRY_CAST(round(COALESCE(TRY_CAST(t AS DECIMAL(18, 8)), TRY_CAST(TRY_CAST(t AS DOUBLE) AS DECIMAL(18, 8))), 4)
                  AS DECIMAL(9, 4))
END;

-- name: macro_rate
CREATE OR REPLACE TEMP MACRO fa_rate(s) AS fa_rate_t(lower(regexp_replace(s, '\s', '', 'g')));

-- name: macro_maybe_offset
-- Where a time zone offset can be: a '+', a Z, or a '-' after the first ':'. A cheap question; the
-- regular expression in fa_time_t gives the answer.
CREATE OR REPLACE TEMP MACRO fa_maybe_offset(s) AS
    contains(s, '+') OR contains(s, 'Z') OR contains(s, 'z') OR (strpos(s, ':') > 0 AND contains(substr(s, strpos(s, ':')), '-'));

-- name: macro_time_t
-- The offset test (a regex) runs only where an offset can be. Plain values take the cast straight
-- away (a TIMESTAMP cast would drop an offset).
CREATE OR REPLACE TEMP MACRO fa_time_t(t) AS CASE
    WHEN t IS NULL OR t = '' THEN NULL
    -- Epoch seconds or milliseconds (API exports): instants, shown in Beijing time (2001-09-09 .. 2033-05-18).
    WHEN regexp_full_match(t, '1\d{9}') THEN timezone('Asia/Shanghai', to_timestamp(t::BIGINT))
    WHEN regexp_full_match(t, '1\d{12}') THEN timezone('Asia/Shanghai', to_timestamp(t::BIGINT / 1000))
    WHEN fa_maybe_offset(t)
         AND regexp_matches(t, '\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)$')
        THEN timezone('Asia/Shanghai', TRY_CAST(regexp_replace(upper(t), '\s+([+-]\d|Z$)', '\1') AS TIMESTAMPTZ))
    ELSE COALESCE(TRY_CAST(t AS TIMESTAMP), try_strptime(t, '%Y%m%d'), try_strptime(t, '%Y%m%d%H%M%S'))
END;

-- name: macro_time_fast
-- A value with no sign of an offset is tried as a plain TIMESTAMP (a TIMESTAMP cast would drop an
-- offset). Most values are this; the rest go to fa_time.
CREATE OR REPLACE TEMP MACRO fa_time_fast(s) AS
    CASE WHEN NOT fa_maybe_offset(s) THEN TRY_CAST(s AS TIMESTAMP) END;

-- name: macro_time
-- Dates and times to Asia/Shanghai wall-clock time. Naive values are Beijing time; values with an
-- offset (or Z) are converted. Accepts 2026-11-21, 2026/11/21 14:03, 2026年11月21日, ISO with T.
-- Also 2024.03.05 (with or without a time), and epoch seconds or milliseconds.
CREATE OR REPLACE TEMP MACRO fa_time(s) AS COALESCE(fa_time_fast(s), fa_time_t(regexp_replace(
    trim(replace(replace(replace(replace(replace(fa_text(s), '年', '-'), '月', '-'), '日', ' '), '/', '-'), 'T', ' ')),
    '^(\d{4})\.(\d{1,2})\.(\d{1,2})', '\1-\2-\3')));

-- name: macro_word_key
-- Status-like words are compared without case, white space, '_' and '-' (已红冲-全额 = 已红冲全额).
CREATE OR REPLACE TEMP MACRO fa_word_key(s) AS lower(regexp_replace(s, '[\s_\-]', '', 'g'));

-- name: macro_cell
-- A cell feeding a column that several headers feed (发票号码 and 数电发票号码): trimmed, and empty when it
-- holds only dashes, so that a legacy invoice's '--' in 数电发票号码 gives way to its 发票号码.
CREATE OR REPLACE TEMP MACRO fa_cell(s) AS CASE WHEN fa_dashes(trim(s)) THEN NULL ELSE trim(s) END;

-- name: macro_type_t
-- Free-text invoice kinds to medium (digital / electronic / paper) x kind (special / normal).
-- 数电纸质发票 is paper issued through the digital platform: paper.
CREATE OR REPLACE TEMP MACRO fa_type_t(t) AS CASE
    WHEN t IS NULL OR fa_dashes(t) THEN NULL
    WHEN t IN ('digital_special', 'digital_normal', 'electronic_special', 'electronic_normal',
               'paper_special', 'paper_normal') THEN t
    WHEN NOT regexp_matches(t, '数电|全电|电子|纸|专用|普通|专票|普票|digital|electronic|paper|special|normal') THEN t
    ELSE (CASE WHEN regexp_matches(t, '纸|paper') THEN 'paper'
               WHEN regexp_matches(t, '数电|全电|digital') THEN 'digital'
               WHEN regexp_matches(t, '电子|electronic') THEN 'electronic'
               ELSE 'paper' END)
         || '_' ||
         (CASE WHEN regexp_matches(t, '专用|专票|special') THEN 'special' ELSE 'normal' END)
END;

-- name: macro_type
CREATE OR REPLACE TEMP MACRO fa_type(s) AS fa_type_t(lower(regexp_replace(s, '\s', '', 'g')));

-- name: normalize
-- Parameters besides the file's: $role (invoices | lines | line_file: the required columns of a row
-- differ for lines read beside an invoice sheet), $status_words / $status_values, $risk_words /
-- $risk_values, $upload_words / $upload_values, $not_positive (the model's vocabulary).
CREATE OR REPLACE TEMP TABLE ing_norm AS
WITH
-- Low-cardinality columns are mapped once per distinct value, then joined back.
type_map AS MATERIALIZED (
    SELECT k, fa_text(fa_hw(k)) AS raw, fa_type(fa_hw(k)) AS v,
           regexp_matches(lower(k), '数电|全电|电子|纸|digital|electronic|paper') AS medium_given
    FROM (SELECT DISTINCT invoice_type AS k FROM ing_mapped)
),
status_map AS MATERIALIZED (
    SELECT k, CASE WHEN w IS NULL OR w = '' THEN 'normal'
                   ELSE coalesce($status_values[list_position($status_words, w)], w) END AS v
    FROM (SELECT k, fa_word_key(fa_hw(k)) AS w FROM (SELECT DISTINCT status AS k FROM ing_mapped))
),
risk_map AS MATERIALIZED (
    SELECT k, CASE WHEN k IS NULL THEN NULL WHEN w = '' THEN 'none'
                   ELSE coalesce($risk_values[list_position($risk_words, w)], fa_text(fa_hw(k))) END AS v
    FROM (SELECT k, fa_word_key(fa_hw(k)) AS w FROM (SELECT DISTINCT risk_level AS k FROM ing_mapped))
),
rate_map AS MATERIALIZED (
    SELECT k, fa_rate(fa_hw(k)) AS v FROM (SELECT DISTINCT tax_rate AS k FROM ing_mapped)
),
-- Names: few distinct values per file (sellers, repeat buyers), and the white-space and full-width
-- question costs far more on Chinese text than on ASCII. Normalised once per distinct value.
name_map AS MATERIALIZED (
    SELECT k, fa_text(k) AS v
    FROM (SELECT seller_name AS k FROM ing_mapped UNION SELECT buyer_name FROM ing_mapped)
    WHERE k IS NOT NULL
),
positive_map AS MATERIALIZED (
    SELECT k, list_contains($not_positive, lower(fa_id(k))) AS v FROM (SELECT DISTINCT is_positive AS k FROM ing_mapped)
),
-- Issue times the plain cast cannot read: parsed once per distinct value (the cast is tried on the
-- distinct values, not on every row: the rows cast it again below).
time_map AS MATERIALIZED (
    SELECT k, fa_time(k) AS v FROM (SELECT DISTINCT issue_time AS k FROM ing_mapped WHERE issue_time IS NOT NULL)
    WHERE fa_time_fast(k) IS NULL
),
p AS (
    SELECT
        __line,
        fa_id(invoice_code)                               AS invoice_code,
        fa_id(invoice_number)                             AS invoice_number,
        tm.raw                                            AS invoice_type_raw,
        tm.v                                              AS invoice_type,
        tm.medium_given                                   AS type_medium_given,
        issue_time                                        AS issue_time_text,
        coalesce(fa_time_fast(h.issue_time), ti.v)        AS issue_time,
        fa_id(seller_tax_id)                              AS seller_tax_id,
        sn.v                                              AS seller_name,
        CASE WHEN buyer_tax_id IS NULL THEN NULL ELSE coalesce(fa_id(buyer_tax_id), '') END AS buyer_tax_id,
        CASE WHEN h.buyer_name IS NULL THEN NULL ELSE coalesce(bn.v, '') END AS buyer_name,
        amount                                            AS amount_text,
        fa_amount(amount)                                 AS amount,
        tax_amount                                        AS tax_amount_text,
        fa_amount(tax_amount)                             AS tax_amount,
        rm.v                                              AS tax_rate,
        total_amount                                      AS total_amount_text,
        fa_amount(total_amount)                           AS total_amount,
        sm.v                                              AS status,
        rk.v                                              AS risk_level,
        -- (issuers only, and few have the column: looked up in place, no join for the files without it)
        CASE WHEN h.upload_status IS NULL OR h.upload_status = '' THEN NULL
             ELSE coalesce($upload_values[list_position($upload_words, fa_word_key(fa_hw(h.upload_status)))],
                           fa_text(fa_hw(h.upload_status))) END AS upload_status,
        fa_text(source_document)                          AS source_document,
        coalesce(pm.v, false)                             AS not_positive,
        fa_id(original_invoice_number)                    AS original_invoice_number,
        fa_text(remark)                                   AS remark,
        -- A totals row: its first non-empty cell is 合计 / 合计行 / 总计 / 小计 (the registry's export ends so).
        coalesce(fa_id(invoice_number), '') = '' AND contains(first_cell, '计')
            AND list_contains(['合计', '合计行', '总计', '小计', '合 计'], fa_text(first_cell))
                                                          AS totals_row,
        first_cell IS NULL                                AS empty_row
    FROM ing_mapped h
    LEFT JOIN type_map tm ON tm.k IS NOT DISTINCT FROM h.invoice_type
    LEFT JOIN status_map sm ON sm.k IS NOT DISTINCT FROM h.status
    LEFT JOIN risk_map rk ON rk.k IS NOT DISTINCT FROM h.risk_level
    LEFT JOIN rate_map rm ON rm.k IS NOT DISTINCT FROM h.tax_rate
    LEFT JOIN time_map ti ON ti.k = h.issue_time
    LEFT JOIN name_map sn ON sn.k = h.seller_name
    LEFT JOIN name_map bn ON bn.k = h.buyer_name
    LEFT JOIN positive_map pm ON pm.k IS NOT DISTINCT FROM h.is_positive
)
SELECT
    __line,
    NULLIF(invoice_code, '') AS invoice_code,
    NULLIF(invoice_number, '') AS invoice_number,
    CASE WHEN regexp_full_match(invoice_number, '\d{20}') THEN invoice_number
         ELSE coalesce(invoice_code, '') || '-' || invoice_number END AS invoice_key,
    -- 普通发票 / 增值税专用发票 without a medium, on a fully digital (20-digit) number: a 数电 kind.
    CASE WHEN NOT type_medium_given AND regexp_full_match(invoice_number, '\d{20}')
              AND invoice_type IN ('paper_special', 'paper_normal')
         THEN replace(invoice_type, 'paper_', 'digital_') ELSE invoice_type END AS invoice_type,
    invoice_type_raw,
    issue_time, issue_time::DATE AS issue_date,
    NULLIF(seller_tax_id, '') AS seller_tax_id, seller_name, buyer_tax_id, buyer_name,
    amount, tax_amount, tax_rate, total_amount, status, risk_level, upload_status, source_document, not_positive,
    -- A red invoice: 是否正数发票 = 否, or a negative total (the amount where there is no total).
    coalesce(total_amount < 0, amount < 0, false) OR not_positive AS is_red,
    CASE
        WHEN regexp_full_match(original_invoice_number, '\d{20}') THEN original_invoice_number
        WHEN regexp_full_match(original_invoice_number, '\d{10,12}[-:/]\d{8}')
            THEN regexp_replace(original_invoice_number, '[:/]', '-')
        -- 被红冲蓝字数电票号码：<20> (also 数电发票号码)
        WHEN contains(remark, '被红冲蓝字') AND regexp_matches(remark, '被红冲蓝字数电(发)?票号码:?\s*\d{20}')
            THEN regexp_extract(remark, '被红冲蓝字数电(发)?票号码:?\s*(\d{20})', 2)
        -- 被红冲蓝字发票代码：<code> 被红冲蓝字发票号码：<number>, in either order
        WHEN contains(remark, '被红冲蓝字') AND regexp_matches(remark, '被红冲蓝字发票代码:?\s*\d{10,12}(\D|$)')
             AND regexp_matches(remark, '被红冲蓝字发票号码:?\s*\d{8}(\D|$)')
            THEN regexp_extract(remark, '被红冲蓝字发票代码:?\s*(\d{10,12})(\D|$)', 1) || '-'
                 || regexp_extract(remark, '被红冲蓝字发票号码:?\s*(\d{8})(\D|$)', 1)
        -- 对应正数发票代码:<code>号码:<number>
        WHEN contains(remark, '对应正数') AND regexp_matches(remark, '对应正数发票代码:?\s*\d{10,12}\s*号码:?\s*\d{8}(\D|$)')
            THEN regexp_extract(remark, '对应正数发票代码:?\s*(\d{10,12})', 1) || '-'
                 || regexp_extract(remark, '对应正数发票代码:?\s*\d{10,12}\s*号码:?\s*(\d{8})(\D|$)', 1)
        WHEN regexp_full_match(original_invoice_number, '\d{8}') AND invoice_code IS NOT NULL
            THEN invoice_code || '-' || original_invoice_number
        ELSE NULLIF(original_invoice_number, '')
    END AS original_invoice_key,
    remark,
    coalesce(totals_row, false) OR empty_row AS skipped,
    CASE
        WHEN totals_row THEN '合计 totals row: not an invoice (skipped)'
        WHEN empty_row THEN 'empty row (skipped)'
        WHEN invoice_number IS NULL OR invoice_number = '' THEN
            CASE WHEN $role = 'invoices' THEN 'missing invoice number' ELSE 'line without an invoice number' END
        -- A long number saved by a spreadsheet as a number (2.611319018725455E+19): its digits are lost.
        WHEN contains(invoice_number, 'E') AND regexp_full_match(invoice_number, '\d(\.\d+)?E\+?\d+')
            THEN 'invoice number ' || invoice_number || ' was stored as a number in scientific notation, its '
                 || 'digits are lost: format the column as text in the issuing system''s export'
        WHEN $role <> 'lines' AND issue_time IS NULL THEN
            CASE WHEN fa_text(issue_time_text) IS NULL THEN 'missing issue time'
                 WHEN regexp_full_match(trim(issue_time_text), '[1-9]\d{4}(\.\d+)?')
                     THEN 'issue time ' || trim(issue_time_text) || ' is a spreadsheet serial number, not a date '
                          || '(the file was saved from a spreadsheet with the date column as numbers)'
                 ELSE 'unparseable issue time: ' || left(issue_time_text, 60) END
        WHEN $role <> 'lines' AND seller_tax_id = '' THEN 'missing seller tax id'
        WHEN amount IS NULL THEN CASE WHEN fa_amount_text(amount_text) IS NULL THEN 'missing amount'
                                      ELSE 'unparseable amount: ' || left(amount_text, 60) END
        WHEN tax_amount IS NULL AND fa_amount_text(tax_amount_text) IS NOT NULL
            THEN 'unparseable tax_amount: ' || left(tax_amount_text, 60)
        WHEN total_amount IS NULL AND fa_amount_text(total_amount_text) IS NOT NULL
            THEN 'unparseable total_amount: ' || left(total_amount_text, 60)
        -- No invoice holds 10^13 yuan; bounded so that every sum of a night (amount + tax, the lines of an
        -- invoice, totals per seller) stays inside DECIMAL(18, 2) and no single value can stop a night.
        WHEN abs(amount) >= 1e13 OR abs(tax_amount) >= 1e13 OR abs(total_amount) >= 1e13
            THEN 'amount out of range (10,000,000,000,000 yuan or more is no invoice''s): '
                 || left(concat_ws(' / ', amount_text, tax_amount_text, total_amount_text), 120)
    END AS reason
FROM p;

-- name: line_details
-- What only a line has (its item, quantity, price), read for the tables that are lines.
CREATE OR REPLACE TEMP TABLE ing_line_details AS
SELECT __line, fa_text(item_name) AS item_name, fa_id(tax_code) AS tax_code, fa_text(spec) AS spec,
       fa_text(unit) AS unit, fa_text(quantity) AS quantity, fa_text(unit_price) AS unit_price,
       coalesce(regexp_matches(fa_text(item_name), '详见.{0,6}清单'), false) AS is_summary
FROM ing_mapped;

-- name: line_groups
-- The lines of each invoice of a file (ing_norm_lines: its loaded line rows), summed. A (详见销货清单)
-- summary line stands for the detail lines of the same invoice: where those are there too, it is not
-- counted twice. Numbers only (and the first line's number): a streaming aggregate that spills under a
-- small memory limit.
CREATE OR REPLACE TEMP TABLE ing_line_groups AS
WITH g AS (
    SELECT
        invoice_key,
        min(__line) AS __line,
        count(*)::INTEGER AS lines,
        bool_or(not_positive) AS not_positive,
        bool_or(NOT is_summary) AS has_detail,
        sum(amount) AS amount_all, sum(amount) FILTER (WHERE NOT is_summary) AS amount_detail,
        sum(tax_amount) AS tax_all, sum(tax_amount) FILTER (WHERE NOT is_summary) AS tax_detail,
        CASE WHEN count(total_amount) = count(*) THEN sum(total_amount) END AS total_all,
        CASE WHEN count(total_amount) FILTER (WHERE NOT is_summary) = count(*) FILTER (WHERE NOT is_summary)
             THEN sum(total_amount) FILTER (WHERE NOT is_summary) END AS total_detail,
        CASE WHEN count(tax_rate) = count(*) AND min(tax_rate) = max(tax_rate) THEN min(tax_rate) END AS lines_rate,
        max(abs(amount * tax_rate - tax_amount)) AS gap_all,
        max(abs(amount * tax_rate - tax_amount)) FILTER (WHERE NOT is_summary) AS gap_detail,
        arg_max(__line, abs(amount * tax_rate - tax_amount)) FILTER (WHERE tax_rate IS NOT NULL) AS gap_line_all,
        arg_max(__line, abs(amount * tax_rate - tax_amount)) FILTER (WHERE tax_rate IS NOT NULL AND NOT is_summary)
            AS gap_line_detail
    FROM ing_norm_lines
    GROUP BY invoice_key
)
SELECT invoice_key, __line, lines, not_positive, lines_rate,
       CASE WHEN has_detail THEN amount_detail ELSE amount_all END AS lines_amount,
       CASE WHEN has_detail THEN tax_detail ELSE tax_all END AS lines_tax,
       CASE WHEN has_detail THEN total_detail ELSE total_all END AS lines_total,
       CASE WHEN has_detail THEN gap_detail ELSE gap_all END AS line_rate_gap,
       CASE WHEN has_detail THEN gap_line_detail ELSE gap_line_all END AS line_rate_line
FROM g;

-- name: grouped_invoices
-- A line file's invoices: one record per invoice key, its sums (ing_line_groups) and the other fields of
-- its first line; the fields its lines disagree on are named (line_problem), a remark or blue invoice
-- named on a later line is kept.
CREATE OR REPLACE TEMP TABLE ing_norm AS
WITH disagree AS (
    SELECT
        invoice_key,
        arg_min(original_invoice_key, __line) FILTER (WHERE original_invoice_key IS NOT NULL) AS original_invoice_key,
        arg_min(remark, __line) FILTER (WHERE remark IS NOT NULL) AS remark,
        NULLIF(concat_ws(', ',
            CASE WHEN min(coalesce(invoice_code, '')) <> max(coalesce(invoice_code, '')) THEN 'invoice_code' END,
            CASE WHEN min(coalesce(invoice_type_raw, '')) <> max(coalesce(invoice_type_raw, '')) THEN 'invoice_type' END,
            CASE WHEN min(issue_time) <> max(issue_time) OR count(issue_time) NOT IN (0, count(*)) THEN 'issue_time' END,
            CASE WHEN min(coalesce(seller_tax_id, '')) <> max(coalesce(seller_tax_id, '')) THEN 'seller_tax_id' END,
            CASE WHEN min(coalesce(buyer_tax_id, '')) <> max(coalesce(buyer_tax_id, '')) THEN 'buyer_tax_id' END,
            CASE WHEN min(coalesce(buyer_name, '')) <> max(coalesce(buyer_name, '')) THEN 'buyer_name' END,
            CASE WHEN min(coalesce(status, '')) <> max(coalesce(status, '')) THEN 'status' END,
            CASE WHEN bool_or(not_positive) <> bool_and(not_positive) THEN 'is_positive' END
        ), '') AS line_problem
    FROM ing_norm_lines
    GROUP BY invoice_key
)
SELECT
    g.__line, f.invoice_code, f.invoice_number, g.invoice_key, f.invoice_type, f.invoice_type_raw, f.issue_time,
    f.issue_date, f.seller_tax_id, f.seller_name, f.buyer_tax_id, f.buyer_name,
    g.lines_amount AS amount, g.lines_tax AS tax_amount, g.lines_rate AS tax_rate, g.lines_total AS total_amount,
    f.status, f.risk_level, f.upload_status, f.source_document, g.not_positive,
    coalesce(g.lines_total < 0, g.lines_amount < 0, false) OR g.not_positive AS is_red,
    x.original_invoice_key, x.remark,
    g.lines, g.lines_amount, g.lines_tax, g.line_rate_gap, g.line_rate_line, x.line_problem,
    false AS skipped, NULL::VARCHAR AS reason
FROM ing_line_groups g
JOIN ing_norm_lines f ON f.__line = g.__line
JOIN disagree x ON x.invoice_key = g.invoice_key;

-- name: staged_rows
-- At the commit, once per file: ing_norm_file is a view of that file's invoice rows, with the line
-- sums of its invoices where it has lines (NULL where it has none). The loaded rows, with the values
-- a version of staged_invoices stores (versions.stage writes them).
CREATE OR REPLACE TEMP VIEW ing_stage_rows AS
SELECT n.__line AS line,
       n.invoice_key, coalesce(n.invoice_code, '') AS invoice_code, n.invoice_number, n.invoice_type,
       n.invoice_type_raw, n.issue_time, n.issue_date, n.seller_tax_id, n.seller_name, n.buyer_tax_id,
       n.buyer_name, n.amount, n.tax_amount, n.tax_rate, n.total_amount, n.status, n.is_red,
       n.original_invoice_key, n.remark, n.risk_level,
       n.lines, n.lines_amount, n.lines_tax, n.line_rate_gap, n.line_rate_line,
       n.line_problem, n.upload_status, n.source_document
FROM ing_norm_file n
WHERE n.reason IS NULL;

-- name: staged_lines
CREATE OR REPLACE TEMP VIEW ing_stage_rows AS
SELECT __line AS line, invoice_key, item_name, tax_code, spec, unit, quantity, unit_price, amount, tax_rate,
       tax_amount, total_amount, is_summary
FROM ing_lines_file;

-- name: insert_rejected
-- ing_raw_rejected: the rejected and skipped lines with their text as delivered (see ingest._raw_line_sql).
INSERT INTO ing_rejected BY NAME
SELECT $night AS night, $system AS source_system, $file AS file, __line AS line, raw, reason, $sheet AS sheet,
       skipped
FROM ing_raw_rejected;

-- name: counts
SELECT count(*) AS rows_read, count(*) FILTER (WHERE reason IS NULL) AS rows_loaded,
       count(*) FILTER (WHERE skipped) AS rows_skipped
FROM ing_norm;
