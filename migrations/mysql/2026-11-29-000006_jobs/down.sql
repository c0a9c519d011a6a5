DROP TABLE analytics_applied;
DROP TABLE analytics;
DROP TABLE activity_log;
DROP TABLE actions;
DROP TABLE outbox;
DROP TABLE jobs;
