--
-- PostgreSQL database dump
--


-- Dumped from database version 18.6
-- Dumped by pg_dump version 18.6

SET statement_timeout = 0;
SET lock_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: durable_jobs; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA durable_jobs;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: dead_letters; Type: TABLE; Schema: durable_jobs; Owner: -
--

CREATE TABLE durable_jobs.dead_letters (
    seq bigint NOT NULL,
    letter_id text NOT NULL,
    kind text NOT NULL,
    job text NOT NULL,
    id text NOT NULL,
    state jsonb NOT NULL,
    meta jsonb NOT NULL,
    event jsonb NOT NULL,
    error text NOT NULL,
    reason text NOT NULL,
    attempts integer NOT NULL,
    at timestamp with time zone NOT NULL
);


--
-- Name: dead_letters_seq_seq; Type: SEQUENCE; Schema: durable_jobs; Owner: -
--

CREATE SEQUENCE durable_jobs.dead_letters_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: dead_letters_seq_seq; Type: SEQUENCE OWNED BY; Schema: durable_jobs; Owner: -
--

ALTER SEQUENCE durable_jobs.dead_letters_seq_seq OWNED BY durable_jobs.dead_letters.seq;


--
-- Name: durable_jobs_schema; Type: TABLE; Schema: durable_jobs; Owner: -
--

CREATE TABLE durable_jobs.durable_jobs_schema (
    version integer NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: instances; Type: TABLE; Schema: durable_jobs; Owner: -
--

CREATE TABLE durable_jobs.instances (
    kind text NOT NULL COLLATE pg_catalog."C",
    job text NOT NULL COLLATE pg_catalog."C",
    id text NOT NULL COLLATE pg_catalog."C",
    status text NOT NULL,
    state jsonb NOT NULL,
    meta jsonb NOT NULL,
    alarm_at timestamp with time zone,
    lease_until timestamp with time zone,
    attempt integer NOT NULL,
    retry_started_at timestamp with time zone,
    defects integer NOT NULL,
    last_error text,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL
);


--
-- Name: queue_items; Type: TABLE; Schema: durable_jobs; Owner: -
--

CREATE TABLE durable_jobs.queue_items (
    seq bigint NOT NULL,
    kind text NOT NULL,
    job text NOT NULL,
    id text NOT NULL,
    event_id text NOT NULL,
    event jsonb NOT NULL,
    priority integer NOT NULL,
    partition_key text,
    enqueued_at timestamp with time zone NOT NULL
);


--
-- Name: queue_items_seq_seq; Type: SEQUENCE; Schema: durable_jobs; Owner: -
--

CREATE SEQUENCE durable_jobs.queue_items_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: queue_items_seq_seq; Type: SEQUENCE OWNED BY; Schema: durable_jobs; Owner: -
--

ALTER SEQUENCE durable_jobs.queue_items_seq_seq OWNED BY durable_jobs.queue_items.seq;


--
-- Name: seen_events; Type: TABLE; Schema: durable_jobs; Owner: -
--

CREATE TABLE durable_jobs.seen_events (
    kind text NOT NULL,
    job text NOT NULL,
    id text NOT NULL,
    event_id text NOT NULL,
    at timestamp with time zone NOT NULL
);


--
-- Name: dead_letters seq; Type: DEFAULT; Schema: durable_jobs; Owner: -
--

ALTER TABLE ONLY durable_jobs.dead_letters ALTER COLUMN seq SET DEFAULT nextval('durable_jobs.dead_letters_seq_seq'::regclass);


--
-- Name: queue_items seq; Type: DEFAULT; Schema: durable_jobs; Owner: -
--

ALTER TABLE ONLY durable_jobs.queue_items ALTER COLUMN seq SET DEFAULT nextval('durable_jobs.queue_items_seq_seq'::regclass);


--
-- Data for Name: dead_letters; Type: TABLE DATA; Schema: durable_jobs; Owner: -
--

INSERT INTO durable_jobs.dead_letters (seq, letter_id, kind, job, id, state, meta, event, error, reason, attempts, at) VALUES (1, 'ca0930a9cee1490aacf1607ff614ee78', 'worker_pool', 'thumbnails', '1', 'null', '{"current": null, "processed": 0}', '{"album": {"name": "album-c", "region": "eu"}, "image": "img-003.png", "sizes": [64, 256], "outcome": 400, "requested_at": "2026-01-01T00:00:00+00:00"}', 'RenderError: renderer answered 400', 'not_retryable', 1, '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.dead_letters (seq, letter_id, kind, job, id, state, meta, event, error, reason, attempts, at) VALUES (2, 'f0a172d7ef53460a94d5ac359e89e4bc', 'continuous', 'feeds', 'feed-broken', '{"url": "https://example.com/b.xml", "mode": "raise", "tags": ["ops"], "polls": 0, "source": {"name": "acme", "region": "us"}, "last_polled": null}', '{"run_count": 1, "last_run_at": "2026-01-01T00:00:10+00:00"}', 'null', 'Traceback (most recent call last):
  File "/work/wt-v1data/src/durable_jobs/_runtime/_runner.py", line 143, in run_execution
    outcome = execution.call()
              ^^^^^^^^^^^^^^^^
  File "/work/wt-v1data/src/durable_jobs/_runtime/_continuous.py", line 173, in <lambda>
    call=lambda: job.execute(context),
                 ^^^^^^^^^^^^^^^^^^^^
  File "/work/wt-v1data/tests/data/schema_v1/make_v1_fixtures.py", line 225, in poll_feed
    raise RuntimeError(msg)
RuntimeError: feed parser crashed on https://example.com/b.xml', 'defect', 1, '2026-01-01 00:00:10+00');
INSERT INTO durable_jobs.dead_letters (seq, letter_id, kind, job, id, state, meta, event, error, reason, attempts, at) VALUES (3, '9869641230f949b6836d1ca9fd10bcfc', 'task', 'orders', 'order-dead', '{"items": ["pen", "ink"], "total": 500, "status": "placed", "history": ["place"], "customer": {"name": "bob", "tier": 2}, "shipments": 0, "updated_at": "2026-01-01T00:00:00+00:00", "ship_status": 400}', '{"event_count": 1, "execute_count": 1}', 'null', 'ShipError: carrier answered 400', 'not_retryable', 1, '2026-01-01 00:03:00+00');
INSERT INTO durable_jobs.dead_letters (seq, letter_id, kind, job, id, state, meta, event, error, reason, attempts, at) VALUES (4, '7700f87accfe4e21a7e62a9bf047c15a', 'debounce', 'digests', 'acct-gone', '{"last": {"at": "2026-01-01T00:00:00+00:00", "email": "sig-g1@example.com", "status": 410}, "emails": ["sig-g1@example.com"], "first_at": "2026-01-01T00:00:00+00:00", "statuses": [410]}', '{"started_at": "2026-01-01T00:00:00+00:00", "event_count": 1, "flush_reason": "flush_after"}', 'null', 'MailError: mail server answered 410', 'not_retryable', 1, '2026-01-01 00:05:00+00');


--
-- Data for Name: durable_jobs_schema; Type: TABLE DATA; Schema: durable_jobs; Owner: -
--

INSERT INTO durable_jobs.durable_jobs_schema (version, applied_at) VALUES (1, '2026-11-29 19:26:55.424261+00');


--
-- Data for Name: instances; Type: TABLE DATA; Schema: durable_jobs; Owner: -
--

INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('continuous', 'nightly_report', 'daily', 'active', '{"owner": {"name": "bi", "region": "eu"}, "since": "2026-01-01T00:00:00+00:00", "title": "Daily", "recipients": ["ops@example.com", "cto@example.com"]}', '{"run_count": 0, "last_run_at": null}', '2026-01-01 02:00:00+00', NULL, 1, NULL, 0, NULL, '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('continuous', 'feeds', 'feed-broken', 'failed', '{"url": "https://example.com/b.xml", "mode": "raise", "tags": ["ops"], "polls": 0, "source": {"name": "acme", "region": "us"}, "last_polled": null}', '{"run_count": 1, "last_run_at": "2026-01-01T00:00:10+00:00"}', NULL, NULL, 1, NULL, 2, 'Traceback (most recent call last):
  File "/work/wt-v1data/src/durable_jobs/_runtime/_runner.py", line 143, in run_execution
    outcome = execution.call()
              ^^^^^^^^^^^^^^^^
  File "/work/wt-v1data/src/durable_jobs/_runtime/_continuous.py", line 173, in <lambda>
    call=lambda: job.execute(context),
                 ^^^^^^^^^^^^^^^^^^^^
  File "/work/wt-v1data/tests/data/schema_v1/make_v1_fixtures.py", line 225, in poll_feed
    raise RuntimeError(msg)
RuntimeError: feed parser crashed on https://example.com/b.xml', '2026-01-01 00:00:00+00', '2026-01-01 00:00:10+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('task', 'orders', 'order-dead', 'active', '{"items": ["pen", "ink"], "total": 500, "status": "placed", "history": ["place"], "customer": {"name": "bob", "tier": 2}, "shipments": 0, "updated_at": "2026-01-01T00:00:00+00:00", "ship_status": 400}', '{"event_count": 1, "execute_count": 1}', NULL, NULL, 1, NULL, 0, 'ShipError: carrier answered 400', '2026-01-01 00:00:00+00', '2026-01-01 00:03:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('debounce', 'digests', 'acct-retry', 'active', '{"last": {"at": "2026-01-01T00:00:00+00:00", "email": "sig-r2@example.com", "status": 503}, "emails": ["sig-r1@example.com", "sig-r2@example.com"], "first_at": "2026-01-01T00:00:00+00:00", "statuses": [503, 503]}', '{"started_at": "2026-01-01T00:00:00+00:00", "event_count": 2, "flush_reason": "flush_after"}', '2026-01-01 00:59:04.66661+00', NULL, 2, '2026-01-01 00:05:00+00', 0, 'MailError: mail server answered 503', '2026-01-01 00:00:00+00', '2026-01-01 00:05:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('task', 'orders', 'order-retry', 'active', '{"items": ["book"], "total": 1999, "status": "placed", "history": ["place"], "customer": {"name": "alice", "tier": 1}, "shipments": 0, "updated_at": "2026-01-01T00:00:00+00:00", "ship_status": 503}', '{"event_count": 1, "execute_count": 1}', '2026-01-01 00:59:34.44164+00', NULL, 2, '2026-01-01 00:02:00+00', 0, 'ShipError: carrier answered 503', '2026-01-01 00:00:00+00', '2026-01-01 00:02:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('worker_pool', 'thumbnails', '1', 'active', 'null', '{"current": null, "processed": 1}', NULL, NULL, 1, NULL, 0, NULL, '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('debounce', 'locations', 'truck-7', 'active', '{"driver": {"name": "dana", "region": "eu-west"}, "lat_e6": 48856602, "lon_e6": 2352198, "seen_at": "2026-01-01T00:06:30+00:00", "vehicle": "truck-7"}', '{"started_at": "2026-01-01T00:06:00+00:00", "event_count": 2, "flush_reason": null}', '2026-01-01 00:16:00+00', NULL, 1, NULL, 0, NULL, '2026-01-01 00:06:00+00', '2026-01-01 00:06:30+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('debounce', 'digests', 'acct-burst', 'active', '{"last": {"at": "2026-01-01T00:06:00+00:00", "email": "b4@example.com", "status": 503}, "emails": ["b1@example.com", "b2@example.com", "b3@example.com", "b4@example.com"], "first_at": "2026-01-01T00:06:00+00:00", "statuses": [503, 503, 503, 503]}', '{"started_at": "2026-01-01T00:06:00+00:00", "event_count": 4, "flush_reason": "max_events"}', '2026-01-01 01:10:35.412236+00', NULL, 2, '2026-01-01 00:06:00+00', 0, 'MailError: mail server answered 503', '2026-01-01 00:06:00+00', '2026-01-01 00:06:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('debounce', 'digests', 'team-open', 'active', '{"last": {"at": "2026-01-01T00:07:00+00:00", "email": "o3@example.com", "status": 200}, "emails": ["o1@example.com", "o2@example.com", "o3@example.com"], "first_at": "2026-01-01T00:06:00+00:00", "statuses": [200, 200, 200]}', '{"started_at": "2026-01-01T00:06:00+00:00", "event_count": 3, "flush_reason": null}', '2026-01-01 00:11:00+00', NULL, 1, NULL, 0, NULL, '2026-01-01 00:06:00+00', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('continuous', 'feeds', 'feed-ok', 'active', '{"url": "https://example.com/a.xml", "mode": "ok", "tags": ["news", "tech"], "polls": 8, "source": {"name": "acme", "region": "eu"}, "last_polled": "2026-01-01T00:07:00+00:00"}', '{"run_count": 8, "last_run_at": "2026-01-01T00:07:00+00:00"}', '2026-01-01 00:08:00+00', NULL, 1, NULL, 0, NULL, '2026-01-01 00:00:00+00', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('task', 'orders', 'order-scheduled', 'active', '{"items": ["desk"], "total": 7300, "status": "placed", "history": ["place"], "customer": {"name": "dave", "tier": 1}, "shipments": 0, "updated_at": "2026-01-01T00:07:00+00:00", "ship_status": 200}', '{"event_count": 1, "execute_count": 0}', '2026-01-01 02:07:00+00', NULL, 1, NULL, 0, NULL, '2026-01-01 00:07:00+00', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('task', 'orders', 'order-idle', 'active', '{"items": ["mug"], "total": 990, "status": "on_hold", "history": ["place", "hold"], "customer": {"name": "erin", "tier": 2}, "shipments": 0, "updated_at": "2026-01-01T00:07:00+00:00", "ship_status": 200}', '{"event_count": 2, "execute_count": 0}', NULL, NULL, 1, NULL, 0, NULL, '2026-01-01 00:07:00+00', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('task', 'orders', 'order-many', 'active', '{"items": ["lamp"], "total": 4200, "status": "paid", "history": ["place", "pay", "note"], "customer": {"name": "carol", "tier": 3}, "shipments": 1, "updated_at": "2026-01-01T00:07:00+00:00", "ship_status": 200}', '{"event_count": 3, "execute_count": 1}', '2026-01-01 01:07:00+00', NULL, 1, NULL, 0, NULL, '2026-01-01 00:00:00+00', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('continuous', 'feeds', 'feed-flaky', 'active', '{"url": "https://example.com/c.xml", "mode": "err", "tags": [], "polls": 0, "source": {"name": "news-co", "region": "ap"}, "last_polled": null}', '{"run_count": 1, "last_run_at": "2026-01-01T00:07:00+00:00"}', '2026-01-01 01:12:18.424892+00', NULL, 2, '2026-01-01 00:07:00+00', 0, 'FetchError: feed answered HTTP 503', '2026-01-01 00:07:00+00', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('worker_pool', 'thumbnails', '2', 'active', 'null', '{"current": {"event": "{\"album\":{\"name\":\"album-a\",\"region\":\"eu\"},\"image\":\"img-007.png\",\"sizes\":[64,256],\"outcome\":503,\"requested_at\":\"2026-01-01T00:00:00+00:00\"}", "event_id": "img-007", "priority": 0, "partition_key": "album-a"}, "processed": 1}', '2026-01-01 00:54:32.196379+00', NULL, 2, '2026-01-01 00:00:00+00', 0, 'RenderError: renderer answered 503', '2026-01-01 00:00:00+00', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('worker_pool', 'thumbnails', '0', 'active', 'null', '{"current": null, "processed": 2}', '2026-01-01 00:07:00+00', NULL, 1, NULL, 0, NULL, '2026-01-01 00:00:00+00', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('worker_pool', 'exports', '1', 'paused', 'null', '{"current": null, "processed": 1}', NULL, NULL, 1, NULL, 0, NULL, '2026-01-01 00:00:00+00', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('continuous', 'feeds', 'feed-shaky', 'active', '{"url": "https://example.com/d.xml", "mode": "raise", "tags": ["ops"], "polls": 3, "source": {"name": "acme", "region": "us"}, "last_polled": null}', '{"run_count": 1, "last_run_at": "2026-01-01T00:07:00+00:00"}', '2026-01-01 00:07:10+00', NULL, 1, NULL, 1, 'Traceback (most recent call last):
  File "/work/wt-v1data/src/durable_jobs/_runtime/_runner.py", line 143, in run_execution
    outcome = execution.call()
              ^^^^^^^^^^^^^^^^
  File "/work/wt-v1data/src/durable_jobs/_runtime/_continuous.py", line 173, in <lambda>
    call=lambda: job.execute(context),
                 ^^^^^^^^^^^^^^^^^^^^
  File "/work/wt-v1data/tests/data/schema_v1/make_v1_fixtures.py", line 225, in poll_feed
    raise RuntimeError(msg)
RuntimeError: feed parser crashed on https://example.com/d.xml', '2026-01-01 00:07:00+00', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.instances (kind, job, id, status, state, meta, alarm_at, lease_until, attempt, retry_started_at, defects, last_error, created_at, updated_at) VALUES ('worker_pool', 'exports', '0', 'paused', 'null', '{"current": null, "processed": 0}', NULL, NULL, 1, NULL, 0, NULL, '2026-01-01 00:07:00+00', '2026-01-01 00:07:00+00');


--
-- Data for Name: queue_items; Type: TABLE DATA; Schema: durable_jobs; Owner: -
--

INSERT INTO durable_jobs.queue_items (seq, kind, job, id, event_id, event, priority, partition_key, enqueued_at) VALUES (6, 'worker_pool', 'thumbnails', '2', 'img-007', '{"album": {"name": "album-a", "region": "eu"}, "image": "img-007.png", "sizes": [64, 256], "outcome": 503, "requested_at": "2026-01-01T00:00:00+00:00"}', 0, 'album-a', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.queue_items (seq, kind, job, id, event_id, event, priority, partition_key, enqueued_at) VALUES (8, 'worker_pool', 'thumbnails', '2', 'img-008', '{"album": {"name": "album-h", "region": "eu"}, "image": "img-008.png", "sizes": [128], "outcome": 200, "requested_at": "2026-01-01T00:07:00+00:00"}', 9, 'album-h', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.queue_items (seq, kind, job, id, event_id, event, priority, partition_key, enqueued_at) VALUES (9, 'worker_pool', 'thumbnails', '2', 'img-009', '{"album": {"name": "loose", "region": "eu"}, "image": "img-009.png", "sizes": [128], "outcome": 200, "requested_at": "2026-01-01T00:07:00+00:00"}', 0, NULL, '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.queue_items (seq, kind, job, id, event_id, event, priority, partition_key, enqueued_at) VALUES (10, 'worker_pool', 'thumbnails', '0', 'img-010', '{"album": {"name": "album-b", "region": "eu"}, "image": "img-010.png", "sizes": [128], "outcome": 200, "requested_at": "2026-01-01T00:07:00+00:00"}', 0, 'album-b', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.queue_items (seq, kind, job, id, event_id, event, priority, partition_key, enqueued_at) VALUES (11, 'worker_pool', 'thumbnails', '0', 'img-011', '{"album": {"name": "album-e", "region": "eu"}, "image": "img-011.png", "sizes": [128], "outcome": 200, "requested_at": "2026-01-01T00:07:00+00:00"}', 10, 'album-e', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.queue_items (seq, kind, job, id, event_id, event, priority, partition_key, enqueued_at) VALUES (12, 'worker_pool', 'thumbnails', '0', 'img-014', '{"album": {"name": "loose", "region": "eu"}, "image": "img-014.png", "sizes": [128], "outcome": 200, "requested_at": "2026-01-01T00:07:00+00:00"}', -1, NULL, '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.queue_items (seq, kind, job, id, event_id, event, priority, partition_key, enqueued_at) VALUES (13, 'worker_pool', 'exports', '0', 'exp-002', '{"rows": 10, "table": "table-exp-002", "columns": ["a"], "requested_at": "2026-01-01T00:07:00+00:00"}', 0, 'user-1', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.queue_items (seq, kind, job, id, event_id, event, priority, partition_key, enqueued_at) VALUES (14, 'worker_pool', 'exports', '1', 'exp-003', '{"rows": 10, "table": "table-exp-003", "columns": ["a"], "requested_at": "2026-01-01T00:07:00+00:00"}', 3, 'user-4', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.queue_items (seq, kind, job, id, event_id, event, priority, partition_key, enqueued_at) VALUES (15, 'worker_pool', 'exports', '0', 'exp-004', '{"rows": 10, "table": "table-exp-004", "columns": ["a"], "requested_at": "2026-01-01T00:07:00+00:00"}', 7, 'user-2', '2026-01-01 00:07:00+00');


--
-- Data for Name: seen_events; Type: TABLE DATA; Schema: durable_jobs; Owner: -
--

INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'thumbnails', '0', 'img-001', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'thumbnails', '0', 'img-002', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'thumbnails', '1', 'img-003', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'thumbnails', '1', 'img-004', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'thumbnails', '2', 'img-005', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'thumbnails', '2', 'img-007', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'exports', '1', 'exp-001', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('debounce', 'digests', 'acct-retry', 'sig-r1', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('debounce', 'digests', 'acct-retry', 'sig-r2', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('debounce', 'digests', 'acct-gone', 'sig-g1', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('task', 'orders', 'order-retry', 'ord-r-1', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('task', 'orders', 'order-dead', 'ord-d-1', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('task', 'orders', 'order-many', 'ord-m-1', '2026-01-01 00:00:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('debounce', 'digests', 'team-done', 'sig-d1', '2026-01-01 00:06:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('debounce', 'digests', 'team-done', 'sig-d2', '2026-01-01 00:06:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('debounce', 'digests', 'acct-burst', 'sig-b1', '2026-01-01 00:06:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('debounce', 'digests', 'acct-burst', 'sig-b2', '2026-01-01 00:06:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('debounce', 'digests', 'acct-burst', 'sig-b3', '2026-01-01 00:06:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('debounce', 'digests', 'acct-burst', 'sig-b4', '2026-01-01 00:06:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('debounce', 'digests', 'team-open', 'sig-o1', '2026-01-01 00:06:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('debounce', 'digests', 'team-open', 'sig-o2', '2026-01-01 00:06:30+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('debounce', 'digests', 'team-open', 'sig-o3', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('task', 'orders', 'order-scheduled', 'ord-s-1', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('task', 'orders', 'order-idle', 'ord-i-1', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('task', 'orders', 'order-many', 'ord-m-2', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('task', 'orders', 'order-many', 'ord-m-3', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'thumbnails', '2', 'img-008', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'thumbnails', '2', 'img-009', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'thumbnails', '0', 'img-010', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'thumbnails', '0', 'img-011', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'thumbnails', '0', 'img-014', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'exports', '0', 'exp-002', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'exports', '1', 'exp-003', '2026-01-01 00:07:00+00');
INSERT INTO durable_jobs.seen_events (kind, job, id, event_id, at) VALUES ('worker_pool', 'exports', '0', 'exp-004', '2026-01-01 00:07:00+00');


--
-- Name: dead_letters_seq_seq; Type: SEQUENCE SET; Schema: durable_jobs; Owner: -
--

SELECT pg_catalog.setval('durable_jobs.dead_letters_seq_seq', 4, true);


--
-- Name: queue_items_seq_seq; Type: SEQUENCE SET; Schema: durable_jobs; Owner: -
--

SELECT pg_catalog.setval('durable_jobs.queue_items_seq_seq', 15, true);


--
-- Name: dead_letters dead_letters_letter_id_key; Type: CONSTRAINT; Schema: durable_jobs; Owner: -
--

ALTER TABLE ONLY durable_jobs.dead_letters
    ADD CONSTRAINT dead_letters_letter_id_key UNIQUE (letter_id);


--
-- Name: dead_letters dead_letters_pkey; Type: CONSTRAINT; Schema: durable_jobs; Owner: -
--

ALTER TABLE ONLY durable_jobs.dead_letters
    ADD CONSTRAINT dead_letters_pkey PRIMARY KEY (seq);


--
-- Name: durable_jobs_schema durable_jobs_schema_pkey; Type: CONSTRAINT; Schema: durable_jobs; Owner: -
--

ALTER TABLE ONLY durable_jobs.durable_jobs_schema
    ADD CONSTRAINT durable_jobs_schema_pkey PRIMARY KEY (version);


--
-- Name: instances instances_pkey; Type: CONSTRAINT; Schema: durable_jobs; Owner: -
--

ALTER TABLE ONLY durable_jobs.instances
    ADD CONSTRAINT instances_pkey PRIMARY KEY (kind, job, id);


--
-- Name: queue_items queue_items_kind_job_id_event_id_key; Type: CONSTRAINT; Schema: durable_jobs; Owner: -
--

ALTER TABLE ONLY durable_jobs.queue_items
    ADD CONSTRAINT queue_items_kind_job_id_event_id_key UNIQUE (kind, job, id, event_id);


--
-- Name: queue_items queue_items_pkey; Type: CONSTRAINT; Schema: durable_jobs; Owner: -
--

ALTER TABLE ONLY durable_jobs.queue_items
    ADD CONSTRAINT queue_items_pkey PRIMARY KEY (seq);


--
-- Name: seen_events seen_events_pkey; Type: CONSTRAINT; Schema: durable_jobs; Owner: -
--

ALTER TABLE ONLY durable_jobs.seen_events
    ADD CONSTRAINT seen_events_pkey PRIMARY KEY (kind, job, id, event_id);


--
-- Name: dead_letters_at; Type: INDEX; Schema: durable_jobs; Owner: -
--

CREATE INDEX dead_letters_at ON durable_jobs.dead_letters USING btree (at, seq);


--
-- Name: instances_alarm; Type: INDEX; Schema: durable_jobs; Owner: -
--

CREATE INDEX instances_alarm ON durable_jobs.instances USING btree (alarm_at) WHERE (alarm_at IS NOT NULL);


--
-- Name: queue_items_order; Type: INDEX; Schema: durable_jobs; Owner: -
--

CREATE INDEX queue_items_order ON durable_jobs.queue_items USING btree (kind, job, id, priority DESC, seq);


--
-- Name: seen_events_at; Type: INDEX; Schema: durable_jobs; Owner: -
--

CREATE INDEX seen_events_at ON durable_jobs.seen_events USING btree (at);


--
-- PostgreSQL database dump complete
--


