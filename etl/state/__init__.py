"""The job's bookkeeping under <output>/_embed_etl/: the only code that touches that folder.

keys         where each record lives
manifest     one record per shard: done or failed, with counts and the input it was made from
claims       who is working on which shard right now
job_record   job.json: the fingerprint every shard of this output was made with
calibration  calibration.json: the int8 ranges fixed once per job
status       what an output holds, for `embed-etl status`
"""
